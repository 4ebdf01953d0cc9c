// The Snapshots page: the lineage templates → spawned sandboxes → their pause generations,
// from GET /v1/snapshots and GET /v1/sandboxes?all=1, and the import of an export that is on
// the daemon's host (POST /v1/snapshots {path}).
import { useState } from "preact/hooks";
import { call } from "./api.js";
import { usePoll } from "./hooks.js";
import { ErrorBox } from "./dialog.jsx";
import { bytes, label, time } from "./format.js";

async function load() {
  const [sn, sb] = await Promise.all([call("GET", "/v1/snapshots"), call("GET", "/v1/sandboxes?all=1")]);
  return { snapshots: sn.snapshots, sandboxes: sb.sandboxes };
}

// The pause generations of a sandbox, newest first: its snapshot_id, then the parent_id chain
// as far as those snapshots still exist (merges fold older generations into newer ones).
function generations(sb, byId) {
  const out = [];
  const seen = new Set();
  for (let s = byId[sb.snapshot_id]; s && s.kind === "pause" && !seen.has(s.id); s = byId[s.parent_id]) {
    seen.add(s.id);
    out.push(s);
  }
  return out;
}

function SandboxNode({ sb, byId }) {
  const gens = generations(sb, byId);
  return (
    <li class="node sandbox" data-sandbox={sb.name || sb.id}>
      <span class="kind">sandbox</span> <strong>{label(sb)}</strong> <span class={"state " + sb.state}>{sb.state}</span>
      {" "}<span class="meta">{sb.vcpus} vCPU · {sb.memory_mib} MiB</span>
      {gens.length > 0 && (
        <ul aria-label={"Generations of " + label(sb)}>
          {gens.map((g) => (
            <li class="node gen">
              <span class="kind">generation {g.generation}</span> <span class="meta">{bytes(g.size_bytes)} · {time(g.created)}</span>
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}

function ImportForm({ reload }) {
  const [path, setPath] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    try {
      const body = { path: path.trim() };
      if (name.trim()) body.name = name.trim();
      await call("POST", "/v1/snapshots", body);
      setError(null);
      setPath("");
      setName("");
    } catch (err) {
      setError({ what: "Import failed", status: err.status, code: err.code, message: err.message });
    } finally {
      setBusy(false);
      reload();
    }
  }
  return (
    <form onSubmit={submit} aria-labelledby="import-title" class="forms-one">
      <h2 id="import-title">Import an export</h2>
      <p class="help">An archive or directory written by <code>vmsnap snapshot export</code>, on the daemon's host.</p>
      <div class="fields">
        <p><label for="i-path">Path on the host</label>
          <input id="i-path" required value={path} onInput={(e) => setPath(e.currentTarget.value)} /></p>
        <p><label for="i-name">Name (optional)</label>
          <input id="i-name" value={name} onInput={(e) => setName(e.currentTarget.value)} /></p>
      </div>
      <button type="submit" class="primary" disabled={busy}>{busy ? "Importing…" : "Import"}</button>
      <ErrorBox error={error} onClose={() => setError(null)} />
    </form>
  );
}

export function Snapshots() {
  const [data, error, reload] = usePoll(load, 5000);
  if (!data) return (<><h1>Snapshots</h1><ErrorBox error={error} onClose={reload} /><p>Loading…</p></>);
  const byId = Object.fromEntries(data.snapshots.map((s) => [s.id, s]));
  const templates = data.snapshots.filter((s) => s.kind === "template");
  const live = data.sandboxes.filter((s) => s.state !== "stopped");
  const booted = live.filter((s) => !s.template_id || !byId[s.template_id]);
  const total = data.snapshots.reduce((a, s) => a + (s.size_bytes || 0), 0);
  return (
    <>
      <h1>Snapshots</h1>
      <ErrorBox error={error} onClose={reload} />
      <p>{templates.length} template(s), {data.snapshots.length - templates.length} pause snapshot(s), {bytes(total)} on disk.</p>
      <h2 id="lineage-title">Lineage</h2>
      <ul class="tree" aria-labelledby="lineage-title">
        {templates.map((t) => {
          const kids = live.filter((s) => s.template_id === t.id);
          return (
            <li class="node template" data-template={t.name || t.id}>
              <span class="kind">template</span> <strong>{t.name || t.id.slice(0, 8)}</strong>
              {" "}<span class="meta">{bytes(t.size_bytes)} · {t.vcpus} vCPU · {t.memory_mib} MiB · {t.vmm} · {time(t.created)}</span>
              {kids.length ? <ul aria-label={"Spawned from " + (t.name || t.id)}>{kids.map((s) => <SandboxNode sb={s} byId={byId} />)}</ul>
                : <p class="meta">no sandbox spawned from it now</p>}
            </li>
          );
        })}
        <li class="node image">
          <span class="kind">guest image</span> <strong>booted from the guest image</strong>
          {booted.length ? <ul aria-label="Booted from the guest image">{booted.map((s) => <SandboxNode sb={s} byId={byId} />)}</ul>
            : <p class="meta">none</p>}
        </li>
      </ul>
      <ImportForm reload={reload} />
    </>
  );
}
