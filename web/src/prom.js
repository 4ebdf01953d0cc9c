// A parser of the Prometheus text format 0.0.4 as vmsnapd writes it (docs/api.md "Metrics"):
// returns [{name, labels: {k: v}, value}] for every sample line; comments are skipped.
const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parse(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(LABEL)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

// The value of the first sample of name whose labels include want, or 0.
export function value(samples, name, want = {}) {
  const s = samples.find((x) => x.name === name && Object.entries(want).every(([k, v]) => x.labels[k] === v));
  return s ? s.value : 0;
}

// The cumulative buckets [{le, count}] of a histogram for the given labels.
export function buckets(samples, name, want = {}) {
  return samples
    .filter((x) => x.name === name + "_bucket" && Object.entries(want).every(([k, v]) => x.labels[k] === v))
    .map((x) => ({ le: x.labels.le, count: x.value }));
}
