// Workers and the system: each worker's state, agent kinds, current
// subtask and completed count; the services' health; the queue.

import { call, follow } from "./api.js";
import { h, badge, short, errorBox } from "./util.js";

export function workersView(root) {
  const controller = new AbortController();
  const content = h("div");
  root.append(h("h1", {}, "Workers and system"), content);
  const load = async () => {
    try {
      const s = await call("GET", "/api/status");
      const pending = s.queue.reduce((n, q) => n + q.pending, 0);
      content.replaceChildren(
        h("div.cards", {},
          h("div.card", {}, h("div.muted", {}, "Health"), h("div.big", { id: "health" }, s.health.status),
            h("div.muted", { id: "health-parts" }, Object.entries(s.health.components || {})
              .map(([name, c]) => `${name} ${c.status}${c.detail ? ` (${c.detail})` : ""}`).join(", "))),
          h("div.card", {}, h("div.muted", {}, "Queue"), h("div.big", { id: "queue-depth" }, String(pending)),
            h("div.muted", {}, s.queue.map((q) => `priority ${q.priority}: ${q.pending}`).join(", ") || "empty")),
          h("div.card", {}, h("div.muted", {}, "Under way"), h("div.big", {}, String(s.active.length)), h("div.muted", {}, "tasks"))),
        h("div.table-wrap", {}, h("table", { id: "workers" },
          h("thead", {}, h("tr", {}, ["Worker", "State", "Agents", "Running", "Completed"].map((t) => h("th", {}, t)))),
          h("tbody", {}, s.workers.map((w) => h("tr", { "data-worker": w.worker_id },
            h("td", {}, w.worker_id, w.draining ? " (draining)" : "",
              w.quarantined_until ? ` (quarantined until ${new Date(w.quarantined_until).toLocaleTimeString()})` : ""),
            h("td", {}, badge(w.state)),
            h("td", {}, (w.agent_kinds || []).join(", ")),
            h("td", {}, w.task_id ? h("a", { href: `/tasks/${w.task_id}`, "data-link": true }, `${short(w.task_id)} / ${w.subtask}`) : ""),
            h("td", {}, String(w.completed))))))),
        h("h2", {}, "Last failures"),
        s.failures.length
          ? h("ul", {}, s.failures.map((t) => h("li", {}, h("a", { href: `/tasks/${t.id}`, "data-link": true }, short(t.id)), " ", t.error || "")))
          : h("p.muted", {}, "None."),
      );
      return s;
    } catch (e) {
      content.replaceChildren(errorBox(e));
      return null;
    }
  };
  let pending = null;
  const soon = () => { pending ??= setTimeout(() => { pending = null; load(); }, 300); };
  (async () => {
    const s = await load();
    if (s) follow(`after=${s.last_event_id}`, soon, controller.signal);
  })();
  return () => { controller.abort(); clearTimeout(pending); };
}
