// Permission requests waiting in the selected project, above the prompt
// box where they cannot be missed: the tool, what it would do, Allow /
// Deny with an optional message, "allow always" from the CLI's
// suggestions, and the interactive tools (AskUserQuestion, ExitPlanMode)
// as a question to answer or a plan to approve.

import { h, $, excerpt } from "../dom.js";
import { toolTarget, toolBody } from "./tools.js";

const DESTINATIONS = {
  session: "this session", localSettings: "this project (local settings)",
  projectSettings: "this project", userSettings: "all projects", cliArg: "this run",
};
const MODES = { acceptEdits: "accept edits", bypassPermissions: "bypass permissions", plan: "plan mode", default: "default mode" };

export function describeSuggestion(s) {
  const where = DESTINATIONS[s?.destination] || s?.destination || "";
  let what;
  if (s?.type === "setMode") {
    what = MODES[s.mode] || String(s.mode);
  } else if (s?.type === "addRules" || s?.type === "replaceRules") {
    what = (Array.isArray(s.rules) ? s.rules : [])
      .map((r) => String(r?.toolName ?? "") + (r?.ruleContent ? "(" + r.ruleContent + ")" : "")).join(", ");
  } else if (s?.type === "addDirectories") {
    what = "access to " + (Array.isArray(s.directories) ? s.directories.join(", ") : "");
  } else {
    what = String(s?.type ?? "rule");
  }
  return excerpt(what, 80) + (where ? " for " + where : "");
}

export class PermissionsView {
  constructor(store, sync) {
    this.store = store;
    this.sync = sync;
    this.root = $("permissions");
    this.shown = new Map();
    const update = ({ path } = {}) => { if (!path || path === store.selected) this.update(); };
    store.on("selected", () => this.update(true));
    store.on("conversation", update);
    store.on("append", ({ path, event }) => {
      if (path === store.selected && /^permission\./.test(event.event)) this.update();
    });
    store.on("connection", () => this.update());
    this.update();
  }

  update(all) {
    const c = this.store.current();
    const pending = c && c.subscribed ? c.pending : new Map();
    if (all) {
      this.root.replaceChildren();
      this.shown.clear();
    }
    for (const [id, el] of this.shown) {
      if (!pending.has(id)) {
        el.remove();
        this.shown.delete(id);
      }
    }
    for (const [id, request] of pending) {
      if (!this.shown.has(id)) {
        const el = this.card(c.path, request);
        this.shown.set(id, el);
        this.root.appendChild(el);
      }
    }
    this.root.hidden = this.shown.size === 0;
  }

  card(path, request) {
    const tool = String(request.tool_name ?? "a tool");
    const input = request.input && typeof request.input === "object" ? request.input : {};
    const headingId = "perm-" + Math.random().toString(36).slice(2);
    const error = h("p", { class: "error-text", role: "alert" });
    const message = h("input", { type: "text", class: "perm-message", "aria-label": "Message to Claude (optional)", placeholder: "Message to Claude (optional)" });
    const buttons = [];
    const answer = async (behavior, extra) => {
      for (const b of buttons) b.disabled = true;
      error.textContent = "";
      try {
        const fields = { ...extra };
        if (behavior === "deny" && message.value.trim()) fields.message = message.value.trim();
        await this.sync.respond(path, request.request_id, behavior, fields);
      } catch (e) {
        error.textContent = e.code === "not_found" ? "This request was already answered." : "Could not answer: " + e.message;
        for (const b of buttons) b.disabled = false;
      }
    };
    const button = (label, cls, onclick, attrs = {}) => {
      const b = h("button", { type: "button", class: cls, onclick, ...attrs }, label);
      buttons.push(b);
      return b;
    };

    let body, actions;
    if (tool === "AskUserQuestion" && Array.isArray(input.questions)) {
      const form = questionForm(input.questions);
      body = form.el;
      actions = [
        button("Answer", "primary", () => {
          const answers = form.answers();
          if (!answers) {
            error.textContent = "Choose an answer for every question.";
            return;
          }
          answer("allow", { updated_input: { ...input, answers } });
        }),
        button("Deny", "danger", () => answer("deny")),
      ];
    } else if (tool === "ExitPlanMode") {
      body = toolBody(tool, input);
      actions = [
        button("Approve plan", "primary", () => answer("allow", { updated_input: input })),
        button("Deny", "danger", () => answer("deny")),
      ];
    } else {
      body = toolBody(tool, input);
      const suggestions = Array.isArray(request.permission_suggestions) ? request.permission_suggestions : [];
      actions = [
        button("Allow", "primary", () => answer("allow")),
        ...suggestions.map((s) => button("Allow always: " + describeSuggestion(s), "secondary",
          () => answer("allow", { updated_permissions: [s] }))),
        button("Deny", "danger", () => answer("deny")),
      ];
    }
    const target = toolTarget(tool, input);
    return h("section", { class: "permission", role: "group", "aria-labelledby": headingId },
      h("h3", { id: headingId }, tool === "AskUserQuestion" ? "Claude asks" : tool === "ExitPlanMode" ? "Claude has a plan" : "Claude wants to use " + tool),
      target ? h("p", { class: "tool-target" }, target) : null,
      request.description && request.description !== target ? h("p", { class: "muted" }, String(request.description)) : null,
      request.blocked_path ? h("p", { class: "muted" }, "Outside the allowed directories: " + String(request.blocked_path)) : null,
      body,
      h("div", { class: "perm-actions" }, message, h("div", { class: "buttons" }, actions)),
      error);
  }
}

/** AskUserQuestion's questions as fieldsets; answers() keyed by question text, or null. */
function questionForm(questions) {
  const groups = questions.map((q, i) => {
    const name = "q" + i + "-" + Math.random().toString(36).slice(2);
    const type = q?.multiSelect ? "checkbox" : "radio";
    const options = (Array.isArray(q?.options) ? q.options : []).map((o) => {
      const input = h("input", { type, name, value: String(o?.label ?? "") });
      return { input, el: h("label", { class: "choice" }, input, " ", h("span", {}, String(o?.label ?? "")),
        o?.description ? h("span", { class: "muted" }, " " + String(o.description)) : null) };
    });
    const otherToggle = h("input", { type, name, value: "", "aria-label": "Other" });
    const otherText = h("input", { type: "text", "aria-label": "Other answer", placeholder: "Other…" });
    otherText.addEventListener("input", () => { otherToggle.checked = otherText.value !== ""; });
    const el = h("fieldset", { class: "question" },
      h("legend", {}, q?.header ? h("span", { class: "badge" }, String(q.header)) : null, " ", String(q?.question ?? "")),
      options.map((o) => o.el),
      h("label", { class: "choice" }, otherToggle, " ", otherText));
    const value = () => {
      const chosen = options.filter((o) => o.input.checked).map((o) => o.input.value);
      if (otherToggle.checked && otherText.value.trim()) chosen.push(otherText.value.trim());
      return chosen.length ? chosen.join(", ") : null;
    };
    return { q, el, value };
  });
  return {
    el: h("div", { class: "questions" }, groups.map((g) => g.el)),
    answers() {
      const answers = {};
      for (const g of groups) {
        const v = g.value();
        if (v === null) return null;
        answers[String(g.q?.question ?? "")] = v;
      }
      return answers;
    },
  };
}
