// The task list: status, repository, who created it, age and cost,
// filtered by status and repository, and redrawn as task events arrive.

import { call, follow } from "./api.js";
import { h, badge, short, age, cost, errorBox } from "./util.js";

const STATUSES = ["", "queued", "planning", "awaiting_approval", "running", "merging",
  "succeeded", "conflicted", "failed", "cancelled"];

export function tasksView(root) {
  const controller = new AbortController();
  const status = h("select", { id: "filter-status", "aria-label": "status" },
    STATUSES.map((s) => h("option", { value: s }, s ? s.replace("_", " ") : "any status")));
  const repo = h("input", { id: "filter-repo", placeholder: "repository contains…", "aria-label": "repository" });
  const body = h("tbody", { id: "task-rows" });
  const error = h("div");
  root.append(
    h("h1", {}, "Tasks"),
    h("div.row.filters", {}, status, repo),
    error,
    h("div.table-wrap", {}, h("table", {},
      h("thead", {}, h("tr", {}, ["Status", "Task", "Description", "Repository", "By", "Age", "Cost"].map((t) => h("th", {}, t)))),
      body)),
  );
  let tasks = [];
  const draw = () => {
    const rows = tasks
      .filter((t) => !status.value || t.status === status.value)
      .filter((t) => !repo.value || (t.remote || t.repo).includes(repo.value))
      .map((t) => h("tr", { "data-task": t.id },
        h("td", {}, badge(t.status)),
        h("td", {}, h("a", { href: `/tasks/${t.id}`, "data-link": true }, short(t.id))),
        h("td", {}, (t.description || "").split("\n")[0]),
        h("td", {}, t.remote || t.repo),
        h("td", {}, t.created_by || ""),
        h("td", { title: t.created_at || "" }, age(t.created_at)),
        h("td", {}, cost(t.usage))));
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td.muted", { colspan: 7 }, "No tasks."))]));
  };
  status.addEventListener("change", draw);
  repo.addEventListener("input", draw);
  const load = async () => {
    try {
      tasks = (await call("GET", "/api/tasks?limit=200")).tasks;
      error.replaceChildren();
      draw();
    } catch (e) {
      error.replaceChildren(errorBox(e));
    }
  };
  // Live: every task event (from now on) reloads the list, at most every
  // 300 ms.
  let pending = null;
  const soon = () => { pending ??= setTimeout(() => { pending = null; load(); }, 300); };
  (async () => {
    await load();
    try {
      const s = await call("GET", "/api/status");
      follow(`after=${s.last_event_id}`, (ev) => { if (ev.channel === "task") soon(); }, controller.signal);
    } catch (e) {
      error.replaceChildren(errorBox(e));
    }
  })();
  const ages = setInterval(draw, 30000);
  return () => { controller.abort(); clearInterval(ages); clearTimeout(pending); };
}
