// Creating a task: repository, description, agent, and subtasks with
// their dependencies, or a plan an agent makes (with approval by hand).

import { call } from "./api.js";
import { h, errorBox } from "./util.js";
import { go } from "./main.js";

export function createView(root) {
  const error = h("div");
  const field = (id, label, input) => [h("label", { for: id }, label), input];
  const repo = h("input", { id: "new-repo", required: true, size: 60, placeholder: "/srv/repos/shop or https://…" });
  const base = h("input", { id: "new-base", placeholder: "the repository's HEAD branch" });
  const description = h("textarea", { id: "new-description", required: true });
  const kind = h("select", { id: "new-agent-kind" },
    ["command", "claude-code", "codex-cli", "gemini-cli"].map((k) => h("option", { value: k }, k)));
  const argv = h("textarea", { id: "new-agent-argv", placeholder: "one argument a line, e.g.\nsh\n-c\nmake fmt" });
  const plan = h("input", { id: "new-plan", type: "checkbox" });
  const manual = h("input", { id: "new-plan-manual", type: "checkbox" });
  const rows = h("div", { id: "new-subtasks" });
  const addRow = () => {
    const n = rows.children.length + 1;
    const row = h("div.subtask-row", {},
      h("input", { name: "subtask-name", placeholder: "name", "aria-label": `subtask ${n} name` }),
      h("textarea", { name: "subtask-prompt", placeholder: "what it must do", "aria-label": `subtask ${n} prompt` }),
      h("input", { name: "subtask-depends", placeholder: "after (names, commas)", "aria-label": `subtask ${n} depends on` }),
      h("input", { name: "subtask-paths", placeholder: "only these directories (commas, optional)", "aria-label": `subtask ${n} paths` }),
      h("button.danger", { type: "button", onclick: () => row.remove(), "aria-label": `remove subtask ${n}` }, "Remove"));
    rows.append(row);
  };
  addRow();
  const form = h("form", {
    id: "new-task",
    onsubmit: async (e) => {
      e.preventDefault();
      error.replaceChildren();
      const agent = { kind: kind.value };
      if (kind.value === "command") agent.command = argv.value.split("\n").filter((l) => l.length);
      const body = { repo: repo.value.trim(), description: description.value, agent };
      if (base.value.trim()) body.base = base.value.trim();
      if (plan.checked) {
        body.plan = { approve: manual.checked ? "manual" : "auto" };
      } else {
        body.subtasks = [...rows.children].map((row) => ({
          name: row.querySelector("[name=subtask-name]").value.trim(),
          prompt: row.querySelector("[name=subtask-prompt]").value,
          depends_on: row.querySelector("[name=subtask-depends]").value.split(",").map((s) => s.trim()).filter(Boolean),
          paths: row.querySelector("[name=subtask-paths]").value.split(",").map((s) => s.trim()).filter(Boolean),
        })).filter((s) => s.name || s.prompt);
      }
      try {
        const task = await call("POST", "/api/tasks", body);
        go(`/tasks/${task.id}`);
      } catch (err) {
        error.replaceChildren(errorBox(err));
      }
    },
  },
  h("h1", {}, "New task"),
  field("new-repo", "Repository", repo),
  field("new-base", "Base branch", base),
  field("new-description", "Description", description),
  field("new-agent-kind", "Agent", kind),
  field("new-agent-argv", "Command (for the command agent)", argv),
  h("label", {}, plan, " Let an agent plan the subtasks"),
  h("label", {}, manual, " …and wait for my approval of the plan"),
  h("h2", {}, "Subtasks"),
  rows,
  h("p", {}, h("button", { type: "button", id: "new-add-subtask", onclick: addRow }, "Add a subtask")),
  error,
  h("p", {}, h("button.primary", { type: "submit", id: "new-submit" }, "Create the task")));
  root.append(form);
}
