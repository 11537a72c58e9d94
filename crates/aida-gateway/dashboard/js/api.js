// Talking to AIDA's REST API from the dashboard: the signed-in session
// (tokens in sessionStorage, renewed with the refresh token), JSON calls
// whose errors carry the server's message, and Server-Sent Events read
// over fetch (EventSource cannot send the Authorization header).

const ACCESS = "aida.access", REFRESH = "aida.refresh", USER = "aida.user";

export function user() {
  try { return JSON.parse(sessionStorage.getItem(USER)); } catch { return null; }
}

export function canOperate() {
  const u = user();
  return !!u && (u.role === "operator" || u.role === "admin");
}

function remember(pair) {
  sessionStorage.setItem(ACCESS, pair.access_token);
  sessionStorage.setItem(REFRESH, pair.refresh_token);
  if (pair.user) sessionStorage.setItem(USER, JSON.stringify(pair.user));
}

export function forget() {
  sessionStorage.removeItem(ACCESS);
  sessionStorage.removeItem(REFRESH);
  sessionStorage.removeItem(USER);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `the server answered ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

export async function login(username, password) {
  const r = await fetch("/api/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  remember(body);
  return body.user;
}

export async function logout() {
  try { await call("POST", "/api/auth/logout"); } catch { /* signed out anyway */ }
  forget();
}

let renewing = null;
async function renew() {
  const token = sessionStorage.getItem(REFRESH);
  if (!token) return false;
  renewing ??= fetch("/api/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: token }),
  }).then(async (r) => {
    if (!r.ok) return false;
    remember(await r.json());
    return true;
  }).finally(() => { renewing = null; });
  return renewing;
}

function headers(extra = {}) {
  const h = { ...extra };
  const token = sessionStorage.getItem(ACCESS);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function send(method, path, body, accept, signal) {
  const init = { method, signal, headers: headers({ Accept: accept }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r = await fetch(path, init);
  if (r.status === 401 && await renew()) {
    init.headers = { ...init.headers, ...headers() };
    r = await fetch(path, init);
  }
  if (r.status === 401) {
    forget();
    window.dispatchEvent(new Event("aida:signed-out"));
  }
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  return r;
}

/** A JSON call; throws ApiError with the server's message. */
export async function call(method, path, body) {
  const r = await send(method, path, body, "application/json");
  return r.status === 204 ? null : r.json();
}

export async function text(path, accept = "text/plain") {
  return (await send("GET", path, undefined, accept)).text();
}

/**
 * Follows `/api/events?query` until `signal` aborts: `onEvent(event)` for
 * each event; reconnects after a dropped connection with Last-Event-ID.
 */
export function follow(query, onEvent, signal) {
  let last = null;
  (async () => {
    while (!signal.aborted) {
      try {
        const extra = { Accept: "text/event-stream" };
        if (last !== null) extra["Last-Event-ID"] = String(last);
        let r = await fetch(`/api/events?${query}`, { headers: headers(extra), signal });
        if (r.status === 401 && await renew()) {
          r = await fetch(`/api/events?${query}`, { headers: headers(extra), signal });
        }
        if (!r.ok || !r.body) throw new ApiError(r.status, null);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "", data = [], id = null;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          // Whole lines of this chunk; the unfinished one waits for the next.
          const lines = (buffer + value).split("\n");
          buffer = lines.pop();
          for (const raw of lines) {
            const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
            if (line === "") {
              if (data.length) {
                const event = JSON.parse(data.join("\n"));
                if (id !== null) last = Number(id);
                onEvent(event);
              }
              data = []; id = null;
            } else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            else if (line.startsWith("id:")) id = line.slice(3).trim();
          }
        }
        // A task's stream ends when the task ended: nothing more to follow.
        if (query.includes("task=")) return;
      } catch (e) {
        if (signal.aborted) return;
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  })();
}
