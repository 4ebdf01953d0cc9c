// The dashboard's shell: the login form, the navigation between the three pages (chosen by
// the URL fragment, which is never sent to the server) and the shared error and status
// regions. docs/dashboard.md describes the design.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { call, token, setUnauthorizedHandler } from "./api.js";
import { Sandboxes } from "./sandboxes.jsx";
import { Snapshots } from "./snapshots.jsx";
import { Metrics, startSampling, stopSampling } from "./metrics.jsx";

const PAGES = [
  ["sandboxes", "Sandboxes", Sandboxes],
  ["snapshots", "Snapshots", Snapshots],
  ["metrics", "Metrics", Metrics],
];

function pageFromHash() {
  const name = location.hash.replace(/^#\/?/, "");
  return PAGES.find((p) => p[0] === name) || PAGES[0];
}

function Login({ onLogin, reason }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(reason || "");
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await call("GET", "/v1/sandboxes", undefined, value.trim());
      token.set(value.trim());
      onLogin();
    } catch (err) {
      setError(err.status === 401 ? "The daemon refused this token: " + err.message : err.message);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="login">
      <h1>vmsnap dashboard</h1>
      <form onSubmit={submit} aria-describedby="login-help">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required value={value}
               onInput={(e) => setValue(e.currentTarget.value)} />
        <p id="login-help" class="help">The token is in the daemon's <code>&lt;root&gt;/token</code> (0600). It is kept in this tab only (sessionStorage).</p>
        <button type="submit" class="primary" disabled={busy}>{busy ? "Checking…" : "Log in"}</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
    </main>
  );
}

function App() {
  const [authed, setAuthed] = useState(!!token.get());
  const [reason, setReason] = useState("");
  const [page, setPage] = useState(pageFromHash());
  useEffect(() => {
    setUnauthorizedHandler((msg) => {
      token.clear();
      setReason("Logged out: the daemon refused the token (" + msg + ")");
      setAuthed(false);
    });
    const onHash = () => setPage(pageFromHash());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    if (authed) startSampling();
    else stopSampling();
  }, [authed]);
  useEffect(() => {
    document.title = (authed ? page[1] + " · " : "") + "vmsnap dashboard";
  }, [authed, page]);
  if (!authed) return <Login onLogin={() => { setReason(""); setAuthed(true); }} reason={reason} />;
  const Page = page[2];
  return (
    <>
      <header>
        <span class="brand">vmsnap</span>
        <nav aria-label="Pages">
          {PAGES.map(([id, title]) => (
            <a href={"#/" + id} aria-current={page[0] === id ? "page" : undefined}>{title}</a>
          ))}
        </nav>
        <button type="button" class="link" onClick={() => { token.clear(); setAuthed(false); }}>Log out</button>
      </header>
      <main>
        <Page />
      </main>
    </>
  );
}

render(<App />, document.getElementById("app"));
