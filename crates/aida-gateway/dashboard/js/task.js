// One task at its own URL: its subtasks as a dependency graph updated
// live, the selected subtask's facts, attempts and live log, diffs file by
// file with syntax highlighting, the report, and the actions a role allows
// (cancel the task or a subtask, approve a plan).

import { call, canOperate, follow, text } from "./api.js";
import { h, badge, short, cost, errorBox, toast, ENDED } from "./util.js";
import { markdown } from "./markdown.js";
import { LogLines, LogView } from "./log.js";

export function taskView(root, id) {
  const controller = new AbortController();
  const state = { task: null, selected: null, logs: new Map(), diffFor: undefined };
  const head = h("div", { id: "task-head" });
  const graph = h("div.graph.panel", { id: "graph", "aria-label": "subtasks and their dependencies" });
  const detail = h("div.panel", { id: "subtask" });
  const log = new LogView();
  const extra = h("div", { id: "task-extra" });
  const diff = h("div", { id: "diff" });
  const report = h("div", { id: "report" });
  root.append(head,
    h("div.grid", {}, h("div", {}, graph, extra), h("div", {}, detail, h("h2.log-head", {}, "Log ", log.count), log.el)),
    diff, report);

  const load = async () => {
    try {
      state.task = await call("GET", `/api/tasks/${id}`);
      draw();
    } catch (e) {
      head.replaceChildren(errorBox(e));
    }
  };
  let pending = null;
  const soon = () => { pending ??= setTimeout(() => { pending = null; load(); }, 200); };

  function draw() {
    const t = state.task;
    if (!state.selected || !t.subtasks.some((s) => s.name === state.selected)) {
      state.selected = t.subtasks[0]?.name ?? null;
      redrawLog();
    }
    drawHead(t);
    drawGraph(t);
    drawDetail(t);
    drawExtra(t);
    if (ENDED.includes(t.status) && !report.dataset.loaded) {
      report.dataset.loaded = "1";
      text(`/api/tasks/${id}/report`, "text/markdown")
        .then((md) => report.replaceChildren(h("h2", {}, "Report"), markdown(md)))
        .catch((e) => report.replaceChildren(errorBox(e)));
    }
  }

  function act(label, path, confirmText) {
    return h("button.danger", {
      type: "button",
      onclick: async (e) => {
        if (confirmText && !confirm(confirmText)) return;
        e.target.disabled = true;
        try {
          state.task = await call("POST", path);
          toast(`${label}: done`);
          draw();
        } catch (err) {
          toast(`${label}: ${err.message}`, true);
        } finally {
          e.target.disabled = false;
        }
      },
    }, label);
  }

  function drawHead(t) {
    const actions = [];
    if (canOperate() && !ENDED.includes(t.status)) {
      actions.push(act("Cancel the task", `/api/tasks/${id}/cancel`, "Cancel this task? Its running agents are stopped."));
    }
    if (canOperate() && t.status === "awaiting_approval") {
      const approve = act("Approve the plan", `/api/tasks/${id}/approve`, null);
      approve.className = "primary";
      actions.push(approve);
    }
    if (t.result_commit) {
      actions.push(h("button", { type: "button", id: "result-diff", onclick: () => showDiff(null) }, "Result diff"));
    }
    const d = t.delivery;
    head.replaceChildren(
      h("h1", {}, badge(t.status), " ", (t.description || "").split("\n")[0] || short(t.id)),
      h("dl.facts", {},
        h("dt", {}, "Task"), h("dd", {}, t.id),
        h("dt", {}, "Repository"), h("dd", {}, `${t.remote || t.repo} @ ${t.base || ""} ${short(t.base_commit)}`),
        h("dt", {}, "Created by"), h("dd", {}, t.created_by || ""),
        t.result_branch && [h("dt", {}, "Result"), h("dd", {}, `${t.result_branch} @ ${short(t.result_commit)}`)],
        d && [h("dt", {}, "Delivery"), h("dd", {}, d.status, " ",
          d.pull_request_url ? h("a", { href: d.pull_request_url, rel: "noopener" }, d.pull_request_url) : "", d.error ? ` ${d.error}` : "")],
        t.usage?.cost_usd ? [h("dt", {}, "Cost"), h("dd", {}, cost(t.usage))] : null,
        t.error && [h("dt", {}, "Error"), h("dd.s-failed", {}, t.error)]),
      h("div.row", { id: "task-actions" }, actions));
  }

  function drawGraph(t) {
    const subs = t.subtasks;
    const depth = new Map();
    const level = (s, seen = new Set()) => {
      if (depth.has(s.name)) return depth.get(s.name);
      if (seen.has(s.name)) return 0;
      seen.add(s.name);
      const d = Math.max(-1, ...s.depends_on.map((n) => {
        const dep = subs.find((x) => x.name === n);
        return dep ? level(dep, seen) : -1;
      })) + 1;
      depth.set(s.name, d);
      return d;
    };
    subs.forEach((s) => level(s));
    const columns = [];
    subs.forEach((s) => (columns[depth.get(s.name)] ||= []).push(s));
    const W = 190, H = 54, GX = 60, GY = 18;
    const pos = new Map();
    columns.forEach((col, x) => col.forEach((s, y) => pos.set(s.name, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
    const width = 20 + columns.length * (W + GX) - GX;
    const height = 20 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY) - GY;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const el = (name, attrs, ...kids) => {
      const e = document.createElementNS("http://www.w3.org/2000/svg", name);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      kids.forEach((k) => e.append(k));
      return e;
    };
    for (const s of subs) {
      for (const dep of s.depends_on) {
        const a = pos.get(dep), b = pos.get(s.name);
        if (!a || !b) continue;
        svg.append(el("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
      }
    }
    for (const s of subs) {
      const p = pos.get(s.name);
      let sub = s.status;
      if (s.status === "running") {
        const secs = s.started_at ? Math.round((Date.now() - Date.parse(s.started_at)) / 1000) : 0;
        sub = `running on ${s.worker || "?"} · ${secs}s`;
      } else if (s.stats) {
        sub = `${s.status} · +${s.stats.insertions} -${s.stats.deletions}`;
      }
      const node = el("g", {
        class: `node n-${s.status}${s.name === state.selected ? " selected" : ""}`,
        transform: `translate(${p.x},${p.y})`, tabindex: "0", role: "button",
        "data-subtask": s.name, "data-status": s.status, "aria-label": `${s.name}: ${s.status}`,
      },
      el("rect", { width: W, height: H, rx: 8 }),
      el("text", { x: 10, y: 21 }, document.createTextNode(s.name)),
      el("text", { x: 10, y: 40, class: "sub" }, document.createTextNode(sub)));
      const pick = () => { state.selected = s.name; redrawLog(); draw(); };
      node.addEventListener("click", pick);
      node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
      svg.append(node);
    }
    graph.replaceChildren(h("h2", {}, "Subtasks"), subs.length ? svg : h("p.muted", {}, "No subtasks yet."));
  }

  function drawDetail(t) {
    const s = t.subtasks.find((x) => x.name === state.selected);
    if (!s) { detail.replaceChildren(h("p.muted", {}, "Select a subtask.")); return; }
    const buttons = [];
    if (s.commit) buttons.push(h("button", { type: "button", id: "subtask-diff", onclick: () => showDiff(s.name) }, "Diff"));
    if (canOperate() && !ENDED.includes(t.status) && (s.status === "pending" || s.status === "running")) {
      buttons.push(act(`Cancel ${s.name}`, `/api/tasks/${id}/subtasks/${encodeURIComponent(s.name)}/cancel`, null));
    }
    detail.replaceChildren(...[
      h("h2", {}, s.name, " ", badge(s.status)),
      h("dl.facts", {},
        h("dt", {}, "Prompt"), h("dd", {}, s.prompt),
        s.depends_on.length ? [h("dt", {}, "After"), h("dd", {}, s.depends_on.join(", "))] : null,
        s.paths?.length ? [h("dt", {}, "Paths"), h("dd", {}, s.paths.join(", "))] : null,
        s.worker && [h("dt", {}, "Worker"), h("dd", {}, s.worker)],
        h("dt", {}, "Attempts"), h("dd", {}, String(s.attempts)),
        s.branch && [h("dt", {}, "Branch"), h("dd", {}, `${s.branch} @ ${short(s.commit)}`)],
        s.usage && [h("dt", {}, "Usage"), h("dd", {}, `${s.usage.turns || 0} turns, ${s.usage.input_tokens || 0} in / ${s.usage.output_tokens || 0} out tokens ${cost(s.usage)}`)],
        s.duration_ms != null && [h("dt", {}, "Took"), h("dd", {}, `${(s.duration_ms / 1000).toFixed(1)}s`)],
        s.summary && [h("dt", {}, "Summary"), h("dd", {}, s.summary)],
        s.error && [h("dt", {}, "Error"), h("dd.s-failed", {}, s.error)]),
      s.history?.length ? h("div.table-wrap", {}, h("table", {},
        h("thead", {}, h("tr", {}, ["#", "Worker", "Status", "Error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, s.history.map((a) => h("tr", {}, h("td", {}, String(a.number)), h("td", {}, a.worker || ""),
          h("td", {}, a.status), h("td", {}, a.error || "")))))) : null,
      h("div.row", {}, buttons)].filter(Boolean));
  }

  function drawExtra(t) {
    const parts = [];
    if (t.conflicts?.length) parts.push(h("h2", {}, "Conflicts"),
      h("ul", {}, t.conflicts.map((c) => h("li", {}, `${c.subtask}: ${c.files.join(", ")}`))));
    if (t.predicted_conflicts?.length) parts.push(h("h2", {}, "Conflicts seen coming"),
      h("ul", {}, t.predicted_conflicts.map((p) => h("li", {}, `${p.subtask} with ${p.with}: ${p.files.join(", ")}${p.action === "rerun" ? ` (${p.subtask} ran again on top)` : ""}`))));
    if (t.resolutions?.length) parts.push(h("h2", {}, "Resolved conflicts"),
      h("ul", {}, t.resolutions.map((r) => h("li", {}, `${r.subtask}: ${r.status} by ${r.agent} after ${r.attempts} run(s)${r.error ? `: ${r.error}` : ""}`))));
    const v = t.verification;
    if (v) parts.push(h("h2", {}, "Verification"), h("p", {}, `${v.status} after ${v.runs} run(s)`,
      v.broken_by?.length ? `, broken by ${v.broken_by.join(", ")}` : "", v.excluded?.length ? `, left out ${v.excluded.join(", ")}` : ""),
      v.output_tail ? h("pre.log", {}, v.output_tail) : null);
    extra.replaceChildren(...parts.filter(Boolean));
  }

  // The log: every line of the task's stream is kept by subtask; the
  // selected one's are shown.
  function linesOf(name) {
    let lines = state.logs.get(name);
    if (!lines) state.logs.set(name, (lines = new LogLines()));
    return lines;
  }
  function redrawLog() { log.show(linesOf(state.selected)); }
  function addLine(ev) {
    linesOf(ev.subtask).push(ev.data.stream || "stdout", ev.data.line ?? "");
    if (ev.subtask === state.selected) log.grew();
  }

  async function showDiff(subtask) {
    const q = subtask ? `?subtask=${encodeURIComponent(subtask)}` : "";
    diff.replaceChildren(h("p.muted", {}, "Loading the diff…"));
    try {
      const d = await call("GET", `/api/tasks/${id}/diff${q}`);
      diff.replaceChildren(h("h2", {}, subtask ? `Diff of ${subtask}` : "Diff of the result"),
        ...(d.files.length ? d.files.map((f) => fileEl(f, q)) : [h("p.muted", {}, "No changes.")]));
      diff.scrollIntoView({ block: "start" });
    } catch (e) {
      diff.replaceChildren(errorBox(e));
    }
  }

  function fileEl(f, q) {
    const box = h("section.diff-file", { "data-path": f.path });
    const header = h("header", {}, h("strong", {}, f.old_path ? `${f.old_path} → ${f.path}` : f.path),
      h("span.muted", {}, f.status), h("span.add-count", {}, `+${f.additions}`), h("span.del-count", {}, `-${f.deletions}`));
    box.append(header);
    if (f.binary) { box.append(h("p.muted", {}, "Binary file.")); return box; }
    if (f.hunks_omitted) {
      box.append(h("p", {}, h("button", { type: "button", onclick: async () => {
        const one = await call("GET", `/api/tasks/${id}/diff${q ? `${q}&` : "?"}path=${encodeURIComponent(f.path)}`);
        box.replaceWith(fileEl(one.files[0], q));
      } }, "Load this file")));
      return box;
    }
    const ext = f.path.includes(".") ? f.path.split(".").pop() : "";
    const lang = window.hljs?.getLanguage(ext) ? ext : null;
    const rows = [];
    for (const hunk of f.hunks) {
      rows.push(h("tr.hunk", {}, h("td.num", {}), h("td.num", {}), h("td", {}, hunk.header)));
      let o = hunk.old_start, n = hunk.new_start;
      for (const l of hunk.lines) {
        const cls = l.origin === "+" ? "add" : l.origin === "-" ? "del" : "ctx";
        const code = h("td", {});
        if (lang) code.innerHTML = window.hljs.highlight(l.content, { language: lang, ignoreIllegals: true }).value;
        else code.textContent = l.content;
        code.prepend(l.origin === " " ? " " : l.origin);
        rows.push(h(`tr.${cls}`, {}, h("td.num", {}, l.origin === "+" ? "" : String(o)), h("td.num", {}, l.origin === "-" ? "" : String(n)), code));
        if (l.origin !== "+") o++;
        if (l.origin !== "-") n++;
      }
    }
    box.append(h("div.table-wrap", {}, h("table", {}, h("tbody", {}, rows))));
    return box;
  }

  load();
  follow(`task=${id}`, (ev) => {
    if (ev.kind === "log.line") addLine(ev);
    else soon();
  }, controller.signal);
  const tick = setInterval(() => { if (state.task && !ENDED.includes(state.task.status)) drawGraph(state.task); }, 1000);
  return () => { controller.abort(); clearInterval(tick); clearTimeout(pending); };
}
