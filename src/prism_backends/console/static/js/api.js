// The public API, with the token of this tab's session (sessionStorage only:
// it goes when the tab does, and no other tab or page load from disk sees it).

const TOKEN_KEY = "prism-backends.token";
const DOMAIN_KEY = "prism-backends.domain";

// The console is served at BASE/ui/; the API lives at BASE.
export const BASE = new URL("..", document.baseURI).pathname.replace(/\/$/, "");

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** The claims of a JWT, unverified (the server verifies; this only reads the domain and expiry). */
export function jwtClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get domain() {
    return sessionStorage.getItem(DOMAIN_KEY);
  },
  get signedIn() {
    return Boolean(this.token && this.domain);
  },
  start(token, domain) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(DOMAIN_KEY, domain);
  },
  end() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(DOMAIN_KEY);
  },
  /** Seconds until the token expires (Infinity when it says nothing). */
  remaining() {
    const claims = this.token ? jwtClaims(this.token) : null;
    if (!claims || typeof claims.exp !== "number") return Infinity;
    return claims.exp - Date.now() / 1000;
  },
};

// Set by the app: what to do when the API refuses the token (401).
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** "name: must be ..." -> ["name", "must be ..."]: the service names the field first. */
export function splitFieldMessage(message) {
  const match = /^([a-z_][a-z0-9_.]*): (.+)$/s.exec(message || "");
  return match ? [match[1], match[2]] : [null, message];
}

async function failure(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") message = body.message;
    if (body && typeof body.error === "string") code = body.error;
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  const [field] = splitFieldMessage(message);
  return new ApiError(response.status, code, message, field);
}

/**
 * Call the API: `path` is below BASE, `/{domain}` included by the caller through
 * domainPath(). JSON in and out; `raw: true` returns the Response. A 401 ends the
 * session (whenUnauthorized) unless the call used a token of its own or none.
 */
export async function api(path, { method = "GET", body, query, raw = false, token, anonymous = false } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  const bearer = anonymous ? null : token || session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `The service did not answer (${error.message}).`);
  }
  if (response.status === 401 && !token && !anonymous) {
    const error = await failure(response);
    onUnauthorized(error);
    throw error;
  }
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** `/{domain}/...` for the signed-in domain. */
export function domainPath(rest) {
  return `/${encodeURIComponent(session.domain)}${rest}`;
}

export const cvmPath = (id, rest = "") => domainPath(`/cvms/${encodeURIComponent(id)}${rest}`);

/** Save bytes under a file name, from the page (a Blob and a temporary link). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** base64 -> bytes */
export function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}
