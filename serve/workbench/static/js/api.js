// The API key and every call to /v1. The key lives in sessionStorage only (gone with the tab) and
// travels in the X-API-Key header, never in a URL.
const KEY = "deepwatch.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

function describe(body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    // FastAPI's 422: name the parameter that was refused
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
  }
  return "request failed";
}

async function send(path, options = {}) {
  const key = apiKey();
  if (!key) throw new ApiError(401, "enter an API key first");
  const headers = { "X-API-Key": key, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, describe(body));
  }
  return response;
}

export async function getJson(path, params) {
  const query = params ? `?${params}` : "";
  return (await send(`${path}${query}`)).json();
}

export async function postJson(path, body) {
  const response = await send(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

// A media link from the API: this API's own route needs the key, so it is fetched into a blob: URL;
// a presigned store URL (absolute http(s)) is used as it is. Anything else is refused.
const blobs = new Map();

export async function mediaUrl(link) {
  if (!link) return null;
  if (link.startsWith("/") && !link.startsWith("//")) {
    if (!blobs.has(link)) {
      const blob = await (await send(link)).blob();
      blobs.set(link, URL.createObjectURL(blob));
    }
    return blobs.get(link);
  }
  let parsed;
  try { parsed = new URL(link); } catch { return null; }
  if (parsed.origin === location.origin) return mediaUrl(parsed.pathname + parsed.search);
  return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
}

// Object URLs pin their blobs in memory; a page change lets them go.
export function releaseMedia() {
  for (const url of blobs.values()) URL.revokeObjectURL(url);
  blobs.clear();
}
