"""The harness of api-conformance (conformance.py): the spec, requests through Prism or
straight to the daemon, the checks of an answer against the spec, the failures."""
import http.client
import json
import os

TEST = "api-conformance"
JSON = {"Content-Type": "application/json"}
FRAMES = "application/vnd.vmsnap.exec-frames"

failures = []



def fail(what):
    print("FAIL:", what, flush=True)
    failures.append(what)


# ---- the spec -------------------------------------------------------------------------------

class Spec:
    def __init__(self, path):
        import yaml
        with open(path) as f:
            self.doc = yaml.safe_load(f)

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            target = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def operations(self):
        for template, item in self.doc["paths"].items():
            for method in item:
                if method in ("get", "head", "post", "put", "delete", "patch"):
                    yield method.upper(), template

    def methods(self, template):
        return {m.upper() for m in self.doc["paths"][template]
                if m in ("get", "head", "post", "put", "delete", "patch")}

    def response(self, method, template, status):
        """The documented response of an operation for status (or its default), else None."""
        if method is None:
            name = {404: "NotFound", 405: "MethodNotAllowed"}.get(status)
            return self.resolve({"$ref": "#/components/responses/" + name}) if name else None
        op = self.doc["paths"][template][method.lower()]
        r = op["responses"].get(str(status), op["responses"].get("default"))
        return self.resolve(r) if r else None

    def error_codes(self, response):
        schema = self.resolve(response["content"]["application/json"]["schema"])
        code = schema["properties"]["error"]["properties"]["code"]
        return next(set(p["enum"]) for p in code["allOf"] if "enum" in p)

    def all_codes(self):
        return set(self.doc["components"]["schemas"]["ErrorCode"]["enum"])


# ---- talking to the daemon -------------------------------------------------------------------

class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def code(self):
        try:
            return self.json["error"]["code"]
        except (TypeError, KeyError):
            return None


def send(port, method, path, body=None, headers=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return Answer(r.status, r.getheaders(), r.read())
    finally:
        c.close()


class Harness:
    def __init__(self, spec, daemon, prism_port):
        self.spec = spec
        self.d = daemon
        self.prism_port = prism_port
        self.codes = set()   # error codes seen in conforming answers
        self.ops = set()     # (METHOD, template) seen with a 2xx
        self.last = None     # the last answer through prism
        self.statuses = {}   # (METHOD, template): the statuses seen in conforming answers

    def auth(self, token):
        return {"Authorization": "Bearer " + self.d.token} if token else {}

    def record(self, method, template, a):
        if 200 <= a.status < 300 and method:
            self.ops.add((method, template))
        if method:
            self.statuses.setdefault((method, template), set()).add(a.status)
        if a.code():
            self.codes.add(a.code())

    def via_prism(self, method, path, template, want, code=None, body=None, headers=None,
                  token=True, request_valid=True):
        """One request through prism; checks its verdicts, the status and the error code."""
        h = dict(headers or {})
        h.update(self.auth(token))
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        a = self.last = send(self.prism_port, method, path, body, h)
        what = "%s %s (via prism)" % (method, path)
        violations = json.loads(a.headers.get("sl-violations", "[]"))
        response_v = [v for v in violations if v.get("location", [""])[0] == "response"]
        request_v = [v for v in violations if v.get("location", [""])[0] == "request"]
        for v in response_v:
            fail("%s: the response does not conform: %s at %s" % (what, v.get("message"),
                                                                  "/".join(v["location"])))
        if request_valid is True and request_v:
            fail("%s: a request meant to be valid breaks the spec: %s"
                 % (what, [v.get("message") for v in request_v]))
        if request_valid is False and not request_v:
            fail("%s: the server refuses this request but the spec allows it" % what)
        self.expect(what, a, want, code)
        if not response_v and a.status == want:
            self.record(method, template, a)
        return a.json

    def expect(self, what, a, want, code):
        if a.status != want:
            fail("%s: HTTP %s, want %s: %s" % (what, a.status, want, a.body[:300]))
        elif code and a.code() != code:
            fail("%s: code %s, want %s: %s" % (what, a.code(), code, a.body[:300]))

    def check_local(self, what, method, template, a):
        """Checks an answer prism could not see against the spec. method None: a path that
        is not in the spec (404) or a method it does not have (405)."""
        r = self.spec.response(method, template, a.status)
        if r is None:
            fail("%s: status %s is not documented for it" % (what, a.status))
            return False
        for name, h in (r.get("headers") or {}).items():
            h = self.spec.resolve(h)
            value = a.headers.get(name.lower())
            if h.get("required") and value is None:
                fail("%s: no %s header" % (what, name))
            enum = h.get("schema", {}).get("enum")
            if value is not None and enum and value not in enum:
                fail("%s: %s: %r is not one of %s" % (what, name, value, enum))
        if method == "HEAD" or "content" not in r or a.status == 204:
            if a.body:
                fail("%s: a body where none is documented: %r" % (what, a.body[:100]))
            return True
        types = set(r["content"])  # a documented media type (JSON, or a stream's)
        if a.headers.get("content-type", "").split(";")[0] not in types:
            fail("%s: content type %s (documented: %s)" % (what, a.headers.get("content-type"),
                                                            sorted(types)))
        if a.status < 400:
            return True  # what this test sends straight to the daemon are refusals
        j, codes = a.json, self.spec.error_codes(r)
        ok = (isinstance(j, dict) and sorted(j) == ["error"] and isinstance(j["error"], dict)
              and sorted(j["error"]) == ["code", "message"] and j["error"]["code"] in codes
              and isinstance(j["error"]["message"], str) and j["error"]["message"])
        if not ok:
            fail("%s: the error body does not conform (codes %s): %s" % (what, sorted(codes),
                                                                        a.body[:300]))
        return ok

    def direct(self, method, path, template, want, code=None, body=None, headers=None,
               token=True, spec_method="same"):
        """One request straight to the daemon over TCP, checked here."""
        h = dict(headers or {})
        h.update(self.auth(token))
        a = send(self.d.port, method, path, body, h)
        what = "%s %s" % (method, repr(path)[1:-1])
        self.expect(what, a, want, code)
        m = method if spec_method == "same" else spec_method
        if self.check_local(what, m, template, a) and a.status == want:
            self.record(m, template, a)
        return a

    def head_like_get(self, path, template):
        g = send(self.d.port, "GET", path, headers=self.auth(True))
        a = self.direct("HEAD", path, template, g.status)
        for h in ("content-type", "content-length"):  # a stream has no length in either
            want = g.headers.get(h)
            if a.headers.get(h) != want:
                fail("HEAD %s: %s %r, GET's is %r" % (path, h, a.headers.get(h), want))



def set_mode(path, mode):
    if mode:
        with open(path, "w") as f:
            f.write(mode)
    elif os.path.exists(path):
        os.unlink(path)
