// The Sandboxes page: a live table of GET /v1/sandboxes?all=1 and the operations on them,
// each one public API call (docs/dashboard.md "Pages and their API calls").
import { useState } from "preact/hooks";
import { call, enc } from "./api.js";
import { usePoll } from "./hooks.js";
import { Ask, ErrorBox } from "./dialog.jsx";
import { bytes, label, since, time } from "./format.js";

async function load() {
  const [sb, sn] = await Promise.all([call("GET", "/v1/sandboxes?all=1"), call("GET", "/v1/snapshots")]);
  return { sandboxes: sb.sandboxes, snapshots: sn.snapshots };
}

function CreateForm({ run, templates }) {
  const [name, setName] = useState("");
  const [vcpus, setVcpus] = useState(1);
  const [mem, setMem] = useState(256);
  const [tpl, setTpl] = useState("");
  const [spawnName, setSpawnName] = useState("");
  function create(e) {
    e.preventDefault();
    const body = { vcpus: Number(vcpus), memory_mib: Number(mem) };
    if (name.trim()) body.name = name.trim();
    run("Create", "creating " + (body.name || "a sandbox"), () => call("POST", "/v1/sandboxes", body), () => setName(""));
  }
  function spawn(e) {
    e.preventDefault();
    const body = spawnName.trim() ? { name: spawnName.trim() } : {};
    const t = tpl || (templates[0] && templates[0].id);
    run("Spawn", "spawning from the template", () => call("POST", "/v1/snapshots/" + enc(t) + "/sandboxes", body), () => setSpawnName(""));
  }
  return (
    <div class="forms">
      <form onSubmit={create} aria-labelledby="create-title">
        <h2 id="create-title">Create a sandbox</h2>
        <div class="fields">
          <p><label for="c-name">Name (optional)</label>
            <input id="c-name" value={name} onInput={(e) => setName(e.currentTarget.value)} pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,63}" /></p>
          <p><label for="c-vcpus">vCPUs</label>
            <input id="c-vcpus" type="number" min="1" max="256" value={vcpus} onInput={(e) => setVcpus(e.currentTarget.value)} /></p>
          <p><label for="c-mem">Memory (MiB)</label>
            <input id="c-mem" type="number" min="64" max="65536" step="2" value={mem} onInput={(e) => setMem(e.currentTarget.value)} /></p>
        </div>
        <button type="submit" class="primary">Create</button>
      </form>
      <form onSubmit={spawn} aria-labelledby="spawn-title">
        <h2 id="spawn-title">Spawn from a template</h2>
        <div class="fields">
          <p><label for="s-tpl">Template</label>
            <select id="s-tpl" value={tpl || (templates[0] && templates[0].id)} onChange={(e) => setTpl(e.currentTarget.value)} disabled={!templates.length}>
              {templates.length ? templates.map((t) => <option value={t.id}>{t.name || t.id.slice(0, 8)}</option>)
                : <option value="">no templates yet</option>}
            </select></p>
          <p><label for="s-name">Name (optional)</label>
            <input id="s-name" value={spawnName} onInput={(e) => setSpawnName(e.currentTarget.value)} pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,63}" /></p>
        </div>
        <button type="submit" class="primary" disabled={!templates.length}>Spawn</button>
      </form>
    </div>
  );
}

function Row({ sb, byId, busy, act }) {
  const name = label(sb);
  const gone = sb.state === "stopped";
  const tpl = sb.template_id && byId[sb.template_id];
  return (
    <tr data-sandbox={sb.name || sb.id}>
      <th scope="row"><span class="name">{sb.name || "—"}</span><code class="id" title={sb.id}>{sb.id.slice(0, 8)}</code></th>
      <td data-label="State"><span class={"state " + sb.state}>{sb.state}</span>{sb.error && <span class="why"> {sb.error}</span>}</td>
      <td data-label="VMM">{sb.vmm}</td>
      <td data-label="vCPUs" class="num">{sb.vcpus}</td>
      <td data-label="Memory" class="num">{bytes(sb.memory_mib * 1048576)}</td>
      <td data-label="Generation" class="num">{sb.snapshot_id ? sb.generation : "—"}</td>
      <td data-label="Uptime" title={sb.started ? "VMM started " + time(sb.started) : "no VMM running"}>{sb.started ? since(sb.started) : "—"}</td>
      <td data-label="Last pause" title={time(sb.last_paused)}>{sb.last_paused ? since(sb.last_paused) + " ago" : "—"}</td>
      <td data-label="Template">{tpl ? tpl.name || tpl.id.slice(0, 8) : "—"}</td>
      <td class="actions">
        {busy ? <span class="busy" role="status">{busy}…</span> : (
          <>
            {sb.state === "running" && <button type="button" onClick={() => act(sb, "pause")} aria-label={"Pause " + name}>Pause</button>}
            {sb.state === "paused" && <button type="button" onClick={() => act(sb, "resume")} aria-label={"Resume " + name}>Resume</button>}
            {(sb.state === "running" || sb.state === "paused") && <button type="button" onClick={() => act(sb, "snapshot")} aria-label={"Snapshot " + name + " to a template"}>Snapshot</button>}
            {!gone && <button type="button" class="danger" onClick={() => act(sb, "destroy")} aria-label={"Destroy " + name}>Destroy</button>}
          </>
        )}
      </td>
    </tr>
  );
}

export function Sandboxes() {
  const [data, pollError, reload] = usePoll(load, 3000);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState({});
  const [status, setStatus] = useState("");
  const [ask, setAsk] = useState(null);
  const [showStopped, setShowStopped] = useState(false);

  // Runs one API call: key marks what is busy, the result is announced, errors are shown.
  async function run(what, doing, fn, done, key = "_form") {
    setBusy((b) => ({ ...b, [key]: doing }));
    setStatus(what + ": " + doing + "…");
    try {
      await fn();
      setError(null);
      setStatus(what + ": done");
      if (done) done();
    } catch (e) {
      setError({ what: what + " failed", status: e.status, code: e.code, message: e.message });
      setStatus(what + " failed");
    } finally {
      setBusy((b) => {
        const n = { ...b };
        delete n[key];
        return n;
      });
      reload();
    }
  }

  function act(sb, op) {
    const name = label(sb);
    const path = "/v1/sandboxes/" + enc(sb.id);
    if (op === "pause" || op === "resume")
      return run(op === "pause" ? "Pause " + name : "Resume " + name, op === "pause" ? "pausing" : "resuming",
                 () => call("POST", path + "/" + op), null, sb.id);
    if (op === "snapshot")
      return setAsk({ title: "Snapshot " + name + " to a template", input: "Template name", confirm: "Make template",
                      then: (v) => run("Snapshot " + name, "writing the template", () => call("POST", path + "/snapshot", { name: v }), null, sb.id) });
    setAsk({ title: "Destroy " + name + "?", text: "The VM stops and its disk and memory are deleted. This cannot be undone.",
             confirm: "Destroy", danger: true, then: () => run("Destroy " + name, "destroying", () => call("DELETE", path), null, sb.id) });
  }

  const all = data ? data.sandboxes : [];
  const sandboxes = showStopped ? all : all.filter((s) => s.state !== "stopped");
  const snapshots = data ? data.snapshots : [];
  const byId = Object.fromEntries(snapshots.map((s) => [s.id, s]));
  const templates = snapshots.filter((s) => s.kind === "template" && s.state === "ready");
  return (
    <>
      <h1>Sandboxes</h1>
      <p class="live" role="status" aria-live="polite">{status}</p>
      <ErrorBox error={error || pollError} onClose={() => setError(null)} />
      {busy._form && <p class="busy" role="status">{busy._form}…</p>}
      <CreateForm run={run} templates={templates} />
      <h2 id="list-title">On this host {data && <span class="count">({sandboxes.length})</span>}</h2>
      <p class="check"><input type="checkbox" id="show-stopped" checked={showStopped} onChange={(e) => setShowStopped(e.currentTarget.checked)} />
        <label for="show-stopped">Show stopped sandboxes ({all.length - all.filter((s) => s.state !== "stopped").length})</label></p>
      {!data ? <p>Loading…</p> : !sandboxes.length ? <p>No sandboxes. Create one above.</p> : (
        <table class="sandboxes" aria-labelledby="list-title">
          <thead>
            <tr>
              <th scope="col">Sandbox</th><th scope="col">State</th><th scope="col">VMM</th>
              <th scope="col">vCPUs</th><th scope="col">Memory</th><th scope="col">Generation</th>
              <th scope="col">Uptime</th><th scope="col">Last pause</th><th scope="col">Template</th>
              <th scope="col"><span class="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {sandboxes.map((sb) => <Row key={sb.id} sb={sb} byId={byId} busy={busy[sb.id]} act={act} />)}
          </tbody>
        </table>
      )}
      {ask && <Ask {...ask} onClose={(v) => { const a = ask; setAsk(null); if (v) a.then(v); }} />}
    </>
  );
}
