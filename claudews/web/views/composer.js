// The prompt box: Enter (or Ctrl/Cmd+Enter) sends, Shift+Enter is a new
// line; on a touch screen Enter is a new line and Send sends. The waiting
// prompts, each cancellable; Cancel for the running one; a new session;
// the prompt options the server lets clients set.

import { h, $, excerpt } from "../dom.js";

const OPTIONS_KEY = "claudews.options";

export class ComposerView {
  constructor(store, sync) {
    this.store = store;
    this.sync = sync;
    this.form = $("composer");
    this.text = $("prompt");
    this.send = $("send");
    this.cancelButton = $("cancel");
    this.reset = $("reset");
    this.error = $("composer-error");
    this.queue = $("queue");
    this.drafts = new Map();
    this.coarse = window.matchMedia("(pointer: coarse)");
    this.loadOptions();
    if (this.coarse.matches) this.text.placeholder = "Ask Claude…";

    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    this.text.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || e.isComposing || e.keyCode === 229) return;
      const chord = e.ctrlKey || e.metaKey;
      if (chord || (!e.shiftKey && !e.altKey && !this.coarse.matches)) {
        e.preventDefault();
        this.submit();
      }
    });
    this.text.addEventListener("input", () => {
      if (store.selected) this.drafts.set(store.selected, this.text.value);
      this.autosize();
    });
    this.cancelButton.addEventListener("click", () => this.act(() => this.sync.cancel(store.selected)));
    this.reset.addEventListener("click", () => {
      if (window.confirm("Start a new conversation? The next prompt will not continue this one.")) {
        this.act(() => this.sync.resetSession(store.selected));
      }
    });
    for (const id of ["opt-model", "opt-mode", "opt-stream"]) $(id).addEventListener("change", () => this.saveOptions());

    store.on("selected", () => {
      this.text.value = this.drafts.get(store.selected) || "";
      this.error.textContent = "";
      this.autosize();
      this.update();
    });
    for (const type of ["conversation", "append", "projects", "connection"]) store.on(type, () => this.update());
    store.on("info", () => this.showOptions());
    this.update();
  }

  autosize() {
    this.text.rows = Math.min(10, Math.max(2, this.text.value.split("\n").length));
  }

  loadOptions() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(OPTIONS_KEY) || "{}") || {};
    } catch {}
    $("opt-model").value = typeof saved.model === "string" ? saved.model : "";
    $("opt-mode").value = typeof saved.permission_mode === "string" ? saved.permission_mode : "";
    $("opt-stream").checked = saved.include_partial_messages !== false;
  }

  saveOptions() {
    localStorage.setItem(OPTIONS_KEY, JSON.stringify({
      model: $("opt-model").value.trim(),
      permission_mode: $("opt-mode").value,
      include_partial_messages: $("opt-stream").checked,
    }));
  }

  allowed(name) {
    const allowed = this.store.clientOptions();
    return allowed === null || allowed.includes(name);
  }

  showOptions() {
    $("opt-model-row").hidden = !this.allowed("model");
    $("opt-mode-row").hidden = !this.allowed("permission_mode");
    $("opt-stream-row").hidden = !this.allowed("include_partial_messages");
  }

  options() {
    const options = {};
    const model = $("opt-model").value.trim();
    if (model && this.allowed("model")) options.model = model;
    const mode = $("opt-mode").value;
    if (mode && this.allowed("permission_mode")) options.permission_mode = mode;
    if ($("opt-stream").checked && this.allowed("include_partial_messages")) options.include_partial_messages = true;
    return options;
  }

  async submit() {
    const path = this.store.selected;
    const text = this.text.value;
    if (!path || !text.trim() || this.send.disabled) return;
    this.send.disabled = true;
    this.error.textContent = "";
    try {
      await this.sync.prompt(path, text, this.options());
      if (this.text.value === text) this.text.value = "";
      this.drafts.delete(path);
      this.autosize();
    } catch (e) {
      this.error.textContent = "Not sent: " + e.message;
    } finally {
      this.update();
    }
  }

  async act(action) {
    this.error.textContent = "";
    try {
      await action();
    } catch (e) {
      this.error.textContent = e.code === "not_running" ? "Nothing is running." : e.message;
    }
  }

  update() {
    const store = this.store;
    const c = store.current();
    const online = store.connection.state === "open";
    const project = store.selected ? store.projects.get(store.selected) : null;
    this.form.hidden = !store.selected;
    this.send.disabled = !online || !store.selected;
    const running = c?.subscribed ? Boolean(c.running) : project?.status === "running";
    this.cancelButton.disabled = !online || !running;
    this.reset.disabled = !online || !store.selected;
    const queued = c ? c.queued() : [];
    this.queue.replaceChildren(...queued.map((p) => h("li", {},
      h("span", { class: "queued-text" }, excerpt(p.text, 120)),
      h("button", {
        type: "button", class: "small", "aria-label": "Cancel queued prompt: " + excerpt(p.text, 40),
        onclick: () => this.act(() => this.sync.cancel(store.selected, p.id)),
      }, "Cancel"))));
    this.queue.hidden = queued.length === 0;
  }
}
