// Small helpers shared by the views: building elements (text is always
// set as text, never parsed as HTML), statuses, times and toasts.

/** h("a.link", {href: "/"}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function badge(status) {
  return h(`span.badge.s-${status}`, { "data-status": status }, status.replace("_", " "));
}

export function short(id) { return (id || "").slice(0, 8); }

export function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function cost(usage) {
  return usage && usage.cost_usd ? `$${usage.cost_usd.toFixed(4)}` : "";
}

export function toast(message, error = false) {
  const box = document.getElementById("toast");
  const msg = h(`div.msg${error ? ".error" : ""}`, {}, message);
  box.append(msg);
  setTimeout(() => msg.remove(), error ? 8000 : 4000);
}

export function errorBox(e) {
  return h("div.error-box", { role: "alert" }, e.message || String(e));
}

export const ENDED = ["succeeded", "conflicted", "failed", "cancelled"];
