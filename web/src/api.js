// The dashboard's only way to the daemon: the public REST API (docs/api.md) with the bearer
// token from sessionStorage. The token never goes into a URL, a cookie or localStorage.
const KEY = "vmsnap.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

// One API call. Resolves to the parsed JSON (or text for /metrics, null for 204); rejects
// with ApiError carrying the daemon's status, code and message.
export async function call(method, path, body, tok = token.get()) {
  const headers = { Authorization: "Bearer " + (tok || "") };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach vmsnapd: " + e.message);
  }
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = data && data.error ? data.error : { code: "http_" + r.status, message: String(data || r.statusText) };
    if (r.status === 401 && tok === token.get()) onUnauthorized(err.message);
    throw new ApiError(r.status, err.code, err.message);
  }
  return data;
}

export const enc = encodeURIComponent;

// The error of a non-2xx answer, from its JSON body when it has one.
async function failure(r, tok) {
  const type = r.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await r.json().catch(() => null) : null;
  const err = data && data.error ? data.error : { code: "http_" + r.status, message: r.statusText || "HTTP " + r.status };
  if (r.status === 401 && tok === token.get()) onUnauthorized(err.message);
  return new ApiError(r.status, err.code, err.message);
}

// A binary GET (an export): resolves to a Blob once the whole body is in. The token goes in
// the header as for every call; a stream the daemon cut off rejects.
export async function download(path, tok = token.get()) {
  let r;
  try {
    r = await fetch(path, { headers: { Authorization: "Bearer " + (tok || "") }, cache: "no-store", credentials: "omit", redirect: "error" });
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach vmsnapd: " + e.message);
  }
  if (!r.ok) throw await failure(r, tok);
  try {
    return await r.blob();
  } catch (e) {
    throw new ApiError(r.status, "incomplete", "the export stopped before its end (the daemon's log says why): " + e.message);
  }
}

// A binary POST (an archive upload): the body is the File as it is, streamed by the browser.
export async function upload(path, file, type, tok = token.get()) {
  let r;
  try {
    r = await fetch(path, { method: "POST", body: file, headers: { Authorization: "Bearer " + (tok || ""), "Content-Type": type }, cache: "no-store", credentials: "omit", redirect: "error" });
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach vmsnapd: " + e.message);
  }
  if (!r.ok) throw await failure(r, tok);
  return r.json();
}
