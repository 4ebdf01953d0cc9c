// Shared hooks: polling the API, and running one action with its error kept for display.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

// Calls load() now and every ms while the page is shown; returns [data, error, reload].
export function usePoll(load, ms) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const alive = useRef(true);
  const run = useCallback(async () => {
    try {
      const d = await load();
      if (alive.current) {
        setData(d);
        setError(null);
      }
    } catch (e) {
      if (alive.current) setError({ what: "Refresh failed", status: e.status, code: e.code, message: e.message });
    }
  }, []);
  useEffect(() => {
    alive.current = true;
    run();
    const t = setInterval(run, ms);
    return () => {
      alive.current = false;
      clearInterval(t);
    };
  }, []);
  return [data, error, run];
}
