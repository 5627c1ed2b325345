// The project list (a navigation of links named by each project's path,
// with its status), the form that creates one, and the selected
// project's heading with its delete button.

import { h, $ } from "../dom.js";

export function projectHref(path) {
  return "#p=" + encodeURIComponent(path);
}

export function baseName(path) {
  return path.replace(/\/+$/, "").split("/").pop() || path;
}

function parentDir(path) {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i > 0 ? path.slice(0, i + 1) : "/";
}

export function projectStatus(store, project) {
  const c = store.conversations.get(project.path);
  const pending = c && c.subscribed ? c.pending.size : project.pending_permissions || 0;
  // A followed project's own events are fresher than the list.
  const running = c && c.subscribed ? Boolean(c.running) : project.status === "running";
  const bits = [];
  if (pending) bits.push({ text: pending + " waiting for you", cls: "warn" });
  bits.push({ text: running ? "running" : "idle", cls: running ? "busy" : "" });
  if (project.queue) bits.push({ text: project.queue + " queued", cls: "" });
  return bits;
}

export class ProjectsView {
  constructor(store, sync, select) {
    this.store = store;
    this.sync = sync;
    this.select = select;
    this.list = $("project-list");
    const form = $("create-form");
    const input = $("new-path");
    const error = $("create-error");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const path = input.value.trim();
      if (!path) return;
      error.textContent = "";
      $("create").disabled = true;
      try {
        const project = await sync.createProject(path);
        input.value = "";
        select(project.path);
      } catch (err) {
        error.textContent = err.message;
      } finally {
        $("create").disabled = false;
      }
    });
    $("delete").addEventListener("click", async () => {
      const path = store.selected;
      if (!path || !window.confirm("Delete the project " + path + "?\nIts history is removed from the server; the directory is not touched.")) return;
      try {
        await sync.deleteProject(path);
      } catch (err) {
        $("project-error").textContent = "Not deleted: " + err.message;
      }
    });
    for (const type of ["projects", "selected", "conversation", "connection"]) store.on(type, () => this.render());
    store.on("append", ({ event }) => { if (/^(prompt|permission)\./.test(event.event)) this.render(); });
    store.on("info", () => this.roots());
    store.on("deleted", ({ path }) => { $("project-error").textContent = "The project " + path + " was deleted."; });
    this.render();
  }

  roots() {
    const roots = this.store.projectRoots();
    $("roots").textContent = roots.length ? "Projects can be created under " + roots.join(", ") + "." : "";
    if (roots.length) $("new-path").placeholder = roots[0].replace(/\/$/, "") + "/my-app";
  }

  render() {
    const store = this.store;
    const projects = [...store.projects.values()].sort((a, b) => a.path.localeCompare(b.path));
    this.list.replaceChildren(...projects.map((p) => h("li", { class: p.path === store.selected ? "selected" : "" },
      h("a", { href: projectHref(p.path), "aria-current": p.path === store.selected ? "page" : false, "aria-label": p.path, title: p.path },
        h("span", { class: "name" }, baseName(p.path)), h("span", { class: "dir" }, parentDir(p.path))),
      h("span", { class: "status" }, projectStatus(store, p).map((b) => h("span", { class: "badge " + b.cls }, b.text))))));
    if (!projects.length) this.list.appendChild(h("li", { class: "muted" }, "No projects yet."));

    const project = store.selected ? store.projects.get(store.selected) : null;
    $("project-head").hidden = !store.selected;
    $("project-title").replaceChildren(...(store.selected
      ? [h("span", { class: "name" }, baseName(store.selected)), " ", h("span", { class: "dir" }, store.selected)] : []));
    $("project-status").replaceChildren(...(project ? projectStatus(store, project) : [])
      .map((b) => h("span", { class: "badge " + b.cls }, b.text)));
    $("delete").disabled = !project || store.connection.state !== "open";
    if (project) $("project-error").textContent = "";
    const pending = store.pendingCount();
    document.title = (pending ? "(" + pending + ") " : "") + (store.selected ? store.selected.split("/").pop() + " · " : "") + "claudews";
  }
}
