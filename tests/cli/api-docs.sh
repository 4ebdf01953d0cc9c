#!/bin/bash
# docs/openapi.yaml and docs/api.md kept true to the code of vmsnapd: the same routes
# (src/api/routes.c, and `vmsnapd --print-routes` when it is built) with HEAD beside every
# GET, the same error codes with the same statuses (src/api/errors.c; one error schema per
# status), the same response fields (src/api/model.c) and request fields (src/api/body.c);
# every $ref resolves; every operation documents its error responses. Reads the sources as
# text: needs no daemon. What the daemon actually answers is tests/cli/api-conformance.sh.
set -u

SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if ! python3 -c 'import yaml' 2>/dev/null; then
        echo "api-docs: python3 with PyYAML (python3-yaml) is needed to read openapi.yaml; skipping"
        exit 77
fi
VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
ROUTES_OUT=
if [ -x "$VMSNAPD" ]; then
        ROUTES_OUT=$("$VMSNAPD" --print-routes) || { echo "FAIL: vmsnapd --print-routes"; exit 1; }
fi

ROUTES_OUT=$ROUTES_OUT python3 - "$SRC" <<'PY'
import os, re, sys, yaml

src = sys.argv[1]
read = lambda p: open(os.path.join(src, p)).read()
failures = []
def check(ok, what):
    if not ok:
        failures.append(what)

spec = yaml.safe_load(read("docs/openapi.yaml"))
md = read("docs/api.md")
check(str(spec.get("openapi", "")).startswith("3.0"), "openapi.yaml is not OpenAPI 3.0")

# ---- routes ----
# API_ROUTE_UI is the dashboard's metrics label, not an API route (docs/dashboard.md).
code_routes = set(re.findall(r'\[API_ROUTE_(?!UI\])\w+\] = \{"(\w+)", "([^"]+)", (?:true|false)\}',
                             read("src/api/routes.c")))
check(len(code_routes) >= 15, f"found only {len(code_routes)} routes in routes.c")
spec_routes = {(m.upper(), p) for p, ops in spec["paths"].items()
               for m in ops if m in ("get", "post", "put", "delete", "patch")}
check(code_routes == spec_routes,
      f"routes differ: code only {sorted(code_routes - spec_routes)}, openapi only {sorted(spec_routes - code_routes)}")
md_routes = set(re.findall(r'^\| (GET|POST|DELETE|PUT|PATCH) \| `([^`]+)` \|', md, re.M))
check(code_routes == md_routes,
      f"api.md routes differ: code only {sorted(code_routes - md_routes)}, api.md only {sorted(md_routes - code_routes)}")
printed = os.environ.get("ROUTES_OUT", "")
if printed:
    got = {tuple(line.split()[:2]) for line in printed.splitlines()}
    check(got == code_routes, f"vmsnapd --print-routes differs: {sorted(got ^ code_routes)}")
public = set(re.findall(r'\[API_ROUTE_(?!UI\])\w+\] = \{"(\w+)", "([^"]+)", true\}', read("src/api/routes.c")))
for m, p in code_routes:
    op = spec["paths"][p][m.lower()]
    is_public = op.get("security") == []
    check(is_public == ((m, p) in public), f"{m} {p}: openapi security does not match routes.c")
    responses = {str(k) for k in op.get("responses", {})}
    check(any(r.startswith("2") for r in responses), f"{m} {p}: no success response")
    if not is_public:
        check("401" in responses, f"{m} {p}: no 401 response")
    if "{ref}" in p:
        check("404" in responses, f"{m} {p}: no 404 response")
    if "requestBody" in op:
        # A body without a JSON form is an upload, streamed and never capped
        # (src/api/stream.c): no 413 for it, and none documented.
        streamed = "application/json" not in op["requestBody"].get("content", {})
        for s in ("400", "415") if streamed else ("400", "413", "415"):
            check(s in responses, f"{m} {p}: takes a body but documents no {s}")
        if streamed:
            check("413" not in responses, f"{m} {p}: a streamed upload documents a 413")

# ---- error codes and statuses ----
errors_c = read("src/api/errors.c")
code_errors = {}
for status, code in re.findall(r'\{(\d{3}), "([a-z_]+)"\}', errors_c):
    code_errors.setdefault(code, set()).add(int(status))
check(len(code_errors) >= 20, f"found only {len(code_errors)} error codes in errors.c")
enum = set(spec["components"]["schemas"]["ErrorCode"]["enum"])
check(enum == set(code_errors), f"ErrorCode enum differs: code only {sorted(set(code_errors) - enum)}, openapi only {sorted(enum - set(code_errors))}")
md_errors = {}
for status, code in re.findall(r'^\| (\d{3}) \| `([a-z_]+)` \|', md, re.M):
    md_errors.setdefault(code, set()).add(int(status))
diff = sorted(c for c in set(md_errors) | set(code_errors) if md_errors.get(c) != code_errors.get(c))
check(not diff, f"api.md error table differs from errors.c for: {diff}")
responses_text = yaml.safe_dump(spec["components"]["responses"])
for code in code_errors:
    check(code in responses_text, f"error code {code} is in no openapi response description")
# Each status has its own error schema whose code enum is exactly errors.c's codes of it.
schemas_all = spec["components"]["schemas"]
by_status = {}
for code, statuses in code_errors.items():
    for st in statuses:
        by_status.setdefault(st, set()).add(code)
for name, statuses in (("Error400", {400}), ("Error401", {401}), ("Error404", {404}),
                       ("Error405", {405}), ("Error409", {409}), ("Error413", {413}),
                       ("Error415", {415}), ("Error500", {500}), ("Error503", {503}),
                       ("ErrorOther", {501, 502, 504, 507})):
    want = set().union(*(by_status.get(st, set()) for st in statuses))
    sch = schemas_all.get(name, {})
    code_schema = sch.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
    got = set(next((part.get("enum", []) for part in code_schema.get("allOf", []) if "enum" in part), []))
    check(got == want, f"{name}: codes {sorted(got)}, errors.c has {sorted(want)} for {sorted(statuses)}")
check(set(by_status) <= {400, 401, 404, 405, 409, 413, 415, 500, 501, 502, 503, 504, 507},
      f"errors.c has a status with no error schema: {sorted(by_status)}")
# HEAD is served wherever GET is: the spec says so, with the same statuses.
for p, ops in spec["paths"].items():
    if "get" in ops:
        check("head" in ops, f"{p}: GET without HEAD")
        if "head" in ops:
            check(set(ops["get"]["responses"]) == set(ops["head"]["responses"]),
                  f"{p}: HEAD and GET document different statuses")
    check("head" not in ops or "get" in ops, f"{p}: HEAD without GET")

# ---- response fields ----
model = read("src/api/model.c")
def keys_of(func):
    body = re.search(r'json_t \*%s\(.*?\n\}\n' % func, model, re.S)
    check(body is not None, f"no {func} in model.c")
    return set(re.findall(r'api_json_set\(o, "(\w+)"', body.group(0))) if body else set()
schemas = spec["components"]["schemas"]
details = set(schemas["SnapshotDetails"]["properties"])
check(details == set(schemas["Snapshot"]["properties"]) | {"files", "dependents"},
      "SnapshotDetails is not Snapshot + files + dependents")
check(set(schemas["SnapshotDetails"]["required"]) == details, "SnapshotDetails: required list")
# Fields a schema has only sometimes, set by another function of model.c.
optional = {"Snapshot": {"usage"},  # api_snapshot_add_usage, with ?usage=1
            "Sandbox": {"host"}}   # the cluster's list (src/api/cluster-routes.c)
usage_fn = re.search(r'int api_snapshot_add_usage\(.*?\n\}\n', model, re.S)
usage_keys = set(re.findall(r'"(\w+_bytes|base_image)"', usage_fn.group(0))) if usage_fn else set()
check(usage_keys == set(schemas["SnapshotUsage"]["properties"]),
      f"SnapshotUsage: model.c {sorted(usage_keys)} vs openapi {sorted(schemas['SnapshotUsage']['properties'])}")
for f in usage_keys:
    check(re.search(r"\b%s\b" % f, md), f"api.md does not mention the usage field {f}")
for func, schema in (("api_sandbox_json", "Sandbox"), ("api_snapshot_json", "Snapshot"),
                     ("api_exec_json", "ExecResult")):
    fields = keys_of(func)
    props = set(schemas[schema]["properties"])
    check(fields | optional.get(schema, set()) == props,
          f"{schema}: model.c {sorted(fields)} vs openapi {sorted(props)}")
    check(set(schemas[schema].get("required", [])) == fields, f"{schema}: required list differs from model.c")
    for f in fields:
        check(re.search(r"\b%s\b" % f, md), f"api.md does not mention the {schema} field {f}")

# ---- request fields ----
body_c = read("src/api/body.c")
def allowed(name):
    m = re.search(r'%s\[\] = \{([^}]*)\}' % name, body_c)
    check(m is not None, f"no list {name} in body.c")
    return set(re.findall(r'"(\w+)"', m.group(1))) if m else set()
def in_func(func, name="allowed"):
    m = re.search(r'int %s\(.*?\n\}\n' % func, body_c, re.S)
    check(m is not None, f"no {func} in body.c")
    l = re.search(r'%s\[\] = \{([^}]*)\}' % name, m.group(0)) if m else None
    return set(re.findall(r'"(\w+)"', l.group(1))) if l else set()
for fields, schema in ((allowed("with_template"), "SandboxCreate"),
                       (allowed("without_template"), "SandboxSpawn"),
                       (in_func("api_parse_exec_body"), "ExecRequest"),
                       (in_func("api_parse_snapshot_body"), "SnapshotRequest"),
                       (in_func("api_parse_snapshot_create_body"), "SnapshotCreate"),
                       (in_func("api_parse_remote_push_body"), "RemotePush"),
                       (in_func("api_parse_remote_pull_body"), "RemotePull"),
                       (in_func("api_parse_remote_gc_body"), "RemoteGc")):
    props = set(schemas[schema]["properties"])
    check(fields == props, f"{schema}: body.c {sorted(fields)} vs openapi {sorted(props)}")
    check(schemas[schema].get("additionalProperties") is False, f"{schema}: unknown fields are refused; say additionalProperties: false")

# ---- every $ref resolves ----
def walk(node, path="#"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                target = spec
                for part in v.lstrip("#/").split("/"):
                    target = target.get(part) if isinstance(target, dict) else None
                check(target is not None, f"{path}: $ref {v} does not resolve")
            else:
                walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}/{i}")
walk(spec)

for f in failures:
    print("FAIL:", f)
if failures:
    print(f"api-docs: {len(failures)} check(s) failed")
    sys.exit(1)
print(f"api-docs: {len(code_routes)} routes (and HEAD), {len(code_errors)} error codes by "
      "status, fields of 3 resources and 8 request bodies agree")
PY
