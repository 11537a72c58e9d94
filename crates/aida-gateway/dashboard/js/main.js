// The dashboard's entry: sign-in, the navigation bar and the router. Each
// page is a view that renders into <main> and returns a function that
// stops what it follows (event streams, timers) when the page changes.

import { call, canOperate, login, logout, user } from "./api.js";
import { h, errorBox } from "./util.js";
import { tasksView } from "./tasks.js";
import { taskView } from "./task.js";
import { workersView } from "./workers.js";
import { createView } from "./create.js";

const view = document.getElementById("view");
let stop = () => {};

export function go(path) {
  history.pushState({}, "", path);
  route();
}

function route() {
  stop();
  stop = () => {};
  const path = location.pathname;
  const signedIn = !!user();
  header(signedIn);
  view.replaceChildren();
  if (!signedIn) return loginView();
  let m;
  if (path === "/") stop = tasksView(view) || stop;
  else if ((m = path.match(/^\/tasks\/([0-9a-f-]{36})$/))) stop = taskView(view, m[1]) || stop;
  else if (path === "/workers") stop = workersView(view) || stop;
  else if (path === "/new" && canOperate()) stop = createView(view) || stop;
  else view.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "All tasks")));
  view.focus({ preventScroll: true });
}

function header(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("nav-new").hidden = !canOperate();
  document.getElementById("sign-out").hidden = !signedIn;
  const u = user();
  document.getElementById("who").textContent = u ? `${u.name} (${u.role})` : "";
}

function loginView() {
  const error = h("div");
  const name = h("input", { id: "login-name", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form.login", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.replaceChildren();
      try {
        await login(name.value, pass.value);
        route();
      } catch (err) {
        error.replaceChildren(errorBox(err));
      }
    },
  },
  h("h1", {}, "Sign in to AIDA"),
  h("label", { for: "login-name" }, "User"), name,
  h("label", { for: "login-password" }, "Password"), pass,
  error,
  h("p", {}, h("button.primary", { type: "submit", id: "login-submit" }, "Sign in")));
  view.append(form);
  name.focus();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (a && !e.ctrlKey && !e.metaKey && !e.shiftKey && a.origin === location.origin) {
    e.preventDefault();
    go(a.pathname);
  }
});
document.getElementById("sign-out").addEventListener("click", async () => {
  await logout();
  go("/");
});
window.addEventListener("popstate", route);
window.addEventListener("aida:signed-out", route);
route();

export { call };
