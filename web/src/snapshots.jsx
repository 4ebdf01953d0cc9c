// The Snapshots page: the lineage templates → spawned sandboxes → their pause generations,
// from GET /v1/snapshots?usage=1 and GET /v1/sandboxes?all=1, with each snapshot's real and
// shared bytes; export (GET /v1/snapshots/{id}/export, fetched into a Blob) and import (an
// upload as POST /v1/snapshots, or POST /v1/snapshots {path} for an export on the host).
import { useState } from "preact/hooks";
import { call, download, enc, upload } from "./api.js";
import { usePoll } from "./hooks.js";
import { ErrorBox } from "./dialog.jsx";
import { bytes, label, time } from "./format.js";

async function load() {
  const [sn, sb] = await Promise.all([call("GET", "/v1/snapshots?usage=1"), call("GET", "/v1/sandboxes?all=1")]);
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

// Real and shared bytes of a snapshot (its usage, docs/api.md), as one line.
function Size({ s }) {
  const u = s.usage;
  if (!u) return <span class="size">{bytes(s.size_bytes)}</span>;
  return (
    <span class="size" data-allocated={u.allocated_bytes} data-shared={u.shared_bytes} data-parent-shared={u.parent_shared_bytes}>
      {bytes(u.allocated_bytes)} on disk, {bytes(u.shared_bytes)} shared
      {u.parent_shared_bytes > 0 && <> ({bytes(u.parent_shared_bytes)} with {s.parent_id ? "its parent" : "its template"})</>}
      {u.base_image && <> · base image {bytes(u.base_image_bytes)}</>}
    </span>
  );
}

// Export: the stream into a Blob, saved through a link with a file name (the token stays in
// the request header; a URL of the API would need it in the URL).
function ExportButton({ s, what }) {
  const [state, setState] = useState(null);
  async function run() {
    setState({ busy: true });
    try {
      const blob = await download("/v1/snapshots/" + enc(s.id) + "/export");
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = (s.name || s.id) + ".tar.zst";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      setState({ done: bytes(blob.size) });
    } catch (e) {
      setState({ error: { what: "Export of " + what + " failed", status: e.status, code: e.code, message: e.message } });
    }
  }
  return (
    <span class="export">
      <button type="button" onClick={run} disabled={state && state.busy} aria-label={"Export " + what}>{state && state.busy ? "Exporting…" : "Export"}</button>
      {state && state.done && <span class="meta" role="status"> exported {state.done}</span>}
      {state && state.error && <ErrorBox error={state.error} onClose={() => setState(null)} />}
    </span>
  );
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
            <li class="node gen" data-snapshot={g.id}>
              <span class="kind">generation {g.generation}</span> <span class="meta"><Size s={g} /> · {time(g.created)}</span>
              {" "}<ExportButton s={g} what={"generation " + g.generation + " of " + label(sb)} />
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}

// The archive's media type by its name: the daemon detects the compression either way.
const typeOf = (f) => /\.zst$/.test(f.name) ? "application/zstd" : /\.gz$|\.tgz$/.test(f.name) ? "application/gzip" : /\.tar$/.test(f.name) ? "application/x-tar" : "application/octet-stream";

function UploadForm({ reload }) {
  const [file, setFile] = useState(null);
  const [name, setName] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState("");
  async function submit(e) {
    e.preventDefault();
    const form = e.currentTarget;
    if (!file) return;
    setBusy(true);
    setDone("");
    try {
      const q = name.trim() ? "?name=" + enc(name.trim()) : "";
      const s = await upload("/v1/snapshots" + q, file, typeOf(file));
      setError(null);
      setDone("Imported " + (s.name || s.id.slice(0, 8)) + " (" + bytes(s.size_bytes) + ")");
      setName("");
      setFile(null);
      form.reset();
    } catch (err) {
      setError({ what: "Upload failed", status: err.status, code: err.code, message: err.message });
    } finally {
      setBusy(false);
      reload();
    }
  }
  return (
    <form onSubmit={submit} aria-labelledby="upload-title" class="forms-one">
      <h2 id="upload-title">Import from this computer</h2>
      <p class="help">An export (<code>.tar.zst</code>, <code>.tar.gz</code> or <code>.tar</code>), uploaded to the daemon and checked before it appears.</p>
      <div class="fields">
        <p><label for="u-file">Export file</label>
          <input id="u-file" type="file" required accept=".zst,.gz,.tgz,.tar" onChange={(e) => setFile(e.currentTarget.files[0] || null)} /></p>
        <p><label for="u-name">Name (optional)</label>
          <input id="u-name" value={name} onInput={(e) => setName(e.currentTarget.value)} pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,63}" /></p>
      </div>
      <button type="submit" class="primary" disabled={busy}>{busy ? "Uploading…" : "Upload and import"}</button>
      {done && <p class="meta" role="status">{done}</p>}
      <ErrorBox error={error} onClose={() => setError(null)} />
    </form>
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
      <h2 id="import-title">Import an export on the host</h2>
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
  const shared = data.snapshots.reduce((a, s) => a + (s.usage ? s.usage.shared_bytes : 0), 0);
  return (
    <>
      <h1>Snapshots</h1>
      <ErrorBox error={error} onClose={reload} />
      <p>{templates.length} template(s), {data.snapshots.length - templates.length} pause snapshot(s), {bytes(total)} on disk counted per snapshot, of which {bytes(shared)} in files shared between snapshots (hard links, stored once).</p>
      <h2 id="lineage-title">Lineage</h2>
      <ul class="tree" aria-labelledby="lineage-title">
        {templates.map((t) => {
          const kids = live.filter((s) => s.template_id === t.id);
          return (
            <li class="node template" data-template={t.name || t.id}>
              <span class="kind">template</span> <strong>{t.name || t.id.slice(0, 8)}</strong>
              {" "}<span class="meta"><Size s={t} /> · {t.vcpus} vCPU · {t.memory_mib} MiB · {t.vmm} · {time(t.created)}</span>
              {" "}<ExportButton s={t} what={"template " + (t.name || t.id.slice(0, 8))} />
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
      <UploadForm reload={reload} />
      <ImportForm reload={reload} />
    </>
  );
}
