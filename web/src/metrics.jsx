// The Metrics page: GET /metrics every 5 s from login on (startSampling; whichever page is
// shown), parsed in the page (prom.js). Pause and resume counts over time, the mean latency
// of each interval (Δsum/Δcount), the latency histograms, sandboxes by state and snapshot
// bytes by kind, the memory page sharing saves the running VMMs (Rss − Pss). The last 60
// samples live in memory only.
import { useState } from "preact/hooks";
import { call } from "./api.js";
import { usePoll } from "./hooks.js";
import { ErrorBox } from "./dialog.jsx";
import { buckets, parse, value } from "./prom.js";
import { bytes, duration } from "./format.js";

const OPS = ["pause", "resume"];
const H = "vmsnap_operation_duration_seconds";
const history = [];

function sample(samples) {
  const s = { t: Date.now() };
  for (const op of OPS)
    for (const result of ["ok", "error"]) {
      s[op + "_" + result] = value(samples, H + "_count", { op, result });
      s[op + "_" + result + "_sum"] = value(samples, H + "_sum", { op, result });
    }
  return s;
}

const PERIOD_MS = 5000;
let latest = null; // the newest parsed sample set
let timer = null;

async function tick() {
  const samples = parse(await call("GET", "/metrics"));
  history.push(sample(samples));
  if (history.length > 60) history.shift();
  latest = samples;
  return samples;
}

// Starts sampling /metrics every 5 s (after login); stopSampling forgets every sample.
export function startSampling() {
  if (timer) return;
  tick().catch(() => {});
  timer = setInterval(() => tick().catch(() => {}), PERIOD_MS);
}
export function stopSampling() {
  clearInterval(timer);
  timer = null;
  latest = null;
  history.length = 0;
}

// The page: a fresh sample when it opens (the sampler's may be 5 s old), then the sampler's.
function pageLoader() {
  let first = true;
  return async () => {
    if (first || !latest) {
      first = false;
      return tick();
    }
    return latest;
  };
}

// A line chart of series [{name, cls, points: [[t, v]]}] as SVG, with a text alternative.
function Chart({ title, series, unit }) {
  const W = 560, Hh = 160, P = 36;
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) return <figure class="chart"><figcaption>{title}</figcaption><p class="meta">Collecting samples (one every 5 s)…</p></figure>;
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1e-9, ...all.map((p) => p[1]));
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - P - 8);
  const y = (v) => Hh - 20 - (v / vmax) * (Hh - 30);
  const fmt = unit === "s" ? duration : (v) => String(Math.round(v * 100) / 100);
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${Hh}`} role="img" aria-label={title + ": " + series.map((s) => s.name + " " + fmt(s.points.length ? s.points[s.points.length - 1][1] : 0)).join(", ")}>
        <line x1={P} y1={Hh - 20} x2={W - 8} y2={Hh - 20} class="axis" />
        <line x1={P} y1={10} x2={P} y2={Hh - 20} class="axis" />
        <text x={P - 4} y={14} class="tick" text-anchor="end">{fmt(vmax)}</text>
        <text x={P - 4} y={Hh - 20} class="tick" text-anchor="end">0</text>
        <text x={W - 8} y={Hh - 4} class="tick" text-anchor="end">now</text>
        <text x={P} y={Hh - 4} class="tick">{Math.round((t1 - t0) / 1000)} s ago</text>
        {series.map((s) => (
          <polyline class={"series " + s.cls} points={s.points.map((p) => x(p[0]) + "," + y(p[1])).join(" ")} />
        ))}
      </svg>
      <ul class="legend">{series.map((s) => <li class={s.cls}>{s.name}</li>)}</ul>
    </figure>
  );
}

// The histogram of one operation: per-bucket counts (differences of the cumulative ones).
function Histogram({ samples, op }) {
  const b = buckets(samples, H, { op, result: "ok" });
  const per = b.map((x, i) => ({ le: x.le, n: x.count - (i ? b[i - 1].count : 0) }));
  const max = Math.max(1, ...per.map((x) => x.n));
  const total = b.length ? b[b.length - 1].count : 0;
  return (
    <figure class="chart">
      <figcaption>{op} latency histogram ({total} ok)</figcaption>
      <table class="hist">
        <thead><tr><th scope="col">≤ seconds</th><th scope="col">count</th><th scope="col"><span class="sr-only">bar</span></th></tr></thead>
        <tbody>
          {per.filter((x) => x.n > 0 || x.le === "+Inf").map((x) => (
            <tr><td>{x.le}</td><td class="num">{x.n}</td><td><meter min="0" max={max} value={x.n} aria-label={`${x.n} ${op}s of at most ${x.le} s`} /></td></tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}

// Memory saved by clones and other page sharing: vmsnap_memory_saved_bytes (docs/api.md).
function Memory({ samples }) {
  const has = samples.some((s) => s.name === "vmsnap_memory_saved_bytes");
  if (!has) return <p class="meta">The daemon did not report the VMMs' memory at this scrape.</p>;
  const rss = value(samples, "vmsnap_vmm_memory_bytes", { kind: "rss" });
  const pss = value(samples, "vmsnap_vmm_memory_bytes", { kind: "pss" });
  const saved = value(samples, "vmsnap_memory_saved_bytes");
  return (
    <div class="charts">
      <table class="summary" id="memory">
        <caption>Memory of the running VMMs</caption>
        <tbody>
          <tr data-metric="saved"><th scope="row">saved by page sharing (Rss − Pss)</th><td class="num">{bytes(saved)}</td></tr>
          <tr data-metric="rss"><th scope="row">resident, summed (Rss)</th><td class="num">{bytes(rss)}</td></tr>
          <tr data-metric="pss"><th scope="row">really used (Pss)</th><td class="num">{bytes(pss)}</td></tr>
          <tr data-metric="vmms"><th scope="row">VMM processes</th><td class="num">{value(samples, "vmsnap_vmm_processes")}</td></tr>
        </tbody>
      </table>
    </div>
  );
}

export function Metrics() {
  const [load] = useState(pageLoader); // one loader per visit of the page
  const [samples, error, reload] = usePoll(load, PERIOD_MS);
  const pts = (f) => history.map((h) => [h.t, f(h)]);
  const meanOf = (op) => history.slice(1).map((h, i) => {
    const p = history[i];
    const dn = h[op + "_ok"] - p[op + "_ok"];
    return [h.t, dn > 0 ? (h[op + "_ok_sum"] - p[op + "_ok_sum"]) / dn : 0];
  });
  return (
    <>
      <h1>Metrics</h1>
      <ErrorBox error={error} onClose={reload} />
      {!samples ? <p>Loading…</p> : (
        <>
          <table class="summary">
            <caption>Operations since the daemon started</caption>
            <thead><tr><th scope="col">operation</th><th scope="col">ok</th><th scope="col">errors</th><th scope="col">mean latency</th></tr></thead>
            <tbody>
              {["create", "pause", "resume", "spawn"].map((op) => {
                const n = value(samples, H + "_count", { op, result: "ok" });
                const sum = value(samples, H + "_sum", { op, result: "ok" });
                return (
                  <tr data-op={op}><th scope="row">{op}</th><td class="num">{n}</td>
                    <td class="num">{value(samples, H + "_count", { op, result: "error" })}</td>
                    <td class="num">{n ? duration(sum / n) : "—"}</td></tr>
                );
              })}
            </tbody>
          </table>
          <div class="charts">
            <Chart title="Pause and resume count (cumulative)" series={[
              { name: "pause", cls: "s1", points: pts((h) => h.pause_ok) },
              { name: "resume", cls: "s2", points: pts((h) => h.resume_ok) },
              { name: "errors", cls: "s3", points: pts((h) => h.pause_error + h.resume_error) }]} />
            <Chart title="Mean latency per 5 s interval (0: none in it)" unit="s" series={[
              { name: "pause", cls: "s1", points: meanOf("pause") },
              { name: "resume", cls: "s2", points: meanOf("resume") }]} />
            {OPS.map((op) => <Histogram samples={samples} op={op} />)}
          </div>
          <Memory samples={samples} />
          <div class="charts">
            <table class="summary">
              <caption>Sandboxes by state</caption>
              <tbody>{samples.filter((s) => s.name === "vmsnap_sandboxes").map((s) => (
                <tr><th scope="row">{s.labels.state}</th><td class="num">{s.value}</td></tr>))}</tbody>
            </table>
            <table class="summary">
              <caption>Snapshots by kind</caption>
              <tbody>{samples.filter((s) => s.name === "vmsnap_snapshots").map((s) => (
                <tr><th scope="row">{s.labels.kind}</th><td class="num">{s.value}</td>
                  <td class="num">{bytes(value(samples, "vmsnap_snapshot_bytes", { kind: s.labels.kind }))}</td></tr>))}</tbody>
            </table>
          </div>
        </>
      )}
    </>
  );
}
