// Unit tests of the dashboard's pure helpers (node --test; tests/cli/web-unit.sh runs them):
// the Prometheus text parser on vmsnapd's real format and the size/duration formatting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buckets, parse, value } from "../src/prom.js";
import { bytes, duration, since } from "../src/format.js";

const TEXT = `# HELP vmsnap_operation_duration_seconds Duration of sandbox operations.
# TYPE vmsnap_operation_duration_seconds histogram
vmsnap_operation_duration_seconds_bucket{op="pause",result="ok",le="0.01"} 0
vmsnap_operation_duration_seconds_bucket{op="pause",result="ok",le="1"} 3
vmsnap_operation_duration_seconds_bucket{op="pause",result="ok",le="+Inf"} 4
vmsnap_operation_duration_seconds_sum{op="pause",result="ok"} 5.250000
vmsnap_operation_duration_seconds_count{op="pause",result="ok"} 4
vmsnap_operation_duration_seconds_count{op="pause",result="error"} 1
vmsnapd_http_requests_total{route="/v1/sandboxes/{ref}",method="POST",code="409"} 2
weird{msg="a \\"quoted\\" \\\\ value, with = and }"} 7e-3
vmsnapd_up 1
`;

test("parse reads names, labels (escapes included) and values", () => {
  const s = parse(TEXT);
  assert.equal(s.length, 9);
  assert.deepEqual(s[6], { name: "vmsnapd_http_requests_total",
    labels: { route: "/v1/sandboxes/{ref}", method: "POST", code: "409" }, value: 2 });
  assert.equal(s[7].labels.msg, 'a "quoted" \\ value, with = and }');
  assert.equal(s[7].value, 0.007);
  assert.deepEqual(s[8], { name: "vmsnapd_up", labels: {}, value: 1 });
});

test("value picks by labels, 0 when absent", () => {
  const s = parse(TEXT);
  const H = "vmsnap_operation_duration_seconds";
  assert.equal(value(s, H + "_count", { op: "pause", result: "ok" }), 4);
  assert.equal(value(s, H + "_count", { op: "pause", result: "error" }), 1);
  assert.equal(value(s, H + "_count", { op: "resume", result: "ok" }), 0);
  assert.equal(value(s, H + "_sum", { op: "pause" }), 5.25);
});

test("buckets are the cumulative histogram in order", () => {
  const b = buckets(parse(TEXT), "vmsnap_operation_duration_seconds", { op: "pause", result: "ok" });
  assert.deepEqual(b, [{ le: "0.01", count: 0 }, { le: "1", count: 3 }, { le: "+Inf", count: 4 }]);
});

test("parse skips garbage lines", () => {
  assert.deepEqual(parse("\n# only a comment\n{}\n  \n"), []);
});

test("formatting of sizes and durations", () => {
  assert.equal(bytes(0), "0 B");
  assert.equal(bytes(1536), "1.5 KiB");
  assert.equal(bytes(256 * 1048576), "256.0 MiB");
  assert.equal(bytes(null), "—");
  assert.equal(duration(0.0125), "13 ms");
  assert.equal(duration(2.5), "2.5 s");
  assert.equal(duration(125), "2 min 5 s");
  assert.equal(duration(3 * 3600 + 60), "3 h 1 min");
  assert.equal(since("2026-01-01T00:00:00Z", Date.parse("2026-01-01T00:00:30Z")), "30.0 s");
  assert.equal(since(null), "—");
});
