// The selected project's conversation, role="log": prompts, Claude's text
// as sanitised Markdown, tool calls as cards, thinking collapsed, text
// streaming as it arrives, and each prompt's outcome. Older pages load
// when the reader scrolls to the top.

import { h, $, clear, formatDuration, formatCost } from "../dom.js";
import { renderMarkdown } from "../markdown.js";
import { toolTarget, toolBody, resultText, bounded } from "./tools.js";

const STATUS_TEXT = {
  completed: "Completed", failed: "Failed", cancelled: "Cancelled",
  timeout: "Timed out", interrupted: "Interrupted",
};

/** Outcomes of prompts stopped on purpose: the CLI's error result is not news. */
const STOPPED = new Set(["cancelled", "timeout", "interrupted"]);

/** Turns events, in seq order, into nodes appended to `root`. */
class EventRenderer {
  constructor(root, openDetails) {
    this.root = root;
    this.openDetails = openDetails;
    this.turns = new Map();
    this.tools = new Map();
    this.streams = new Map();
    this.permissions = new Map();
    this.lastOutput = null;
  }

  turn(promptId) {
    let turn = this.turns.get(promptId);
    if (!turn) {
      const body = h("div", { class: "turn-body" });
      const el = h("article", { class: "turn", "data-prompt": promptId || "" }, body);
      turn = { el, body, head: null };
      this.turns.set(promptId, turn);
      this.root.appendChild(el);
    }
    return turn;
  }

  add(promptId, node) {
    this.lastOutput = null;
    this.turn(promptId).body.appendChild(node);
    return node;
  }

  details(key, summary, ...content) {
    const el = h("details", { "data-key": key }, h("summary", {}, summary), ...content);
    if (key && this.openDetails.has(key)) el.open = true;
    el.addEventListener("toggle", () => {
      if (!key) return;
      if (el.open) this.openDetails.add(key);
      else this.openDetails.delete(key);
    });
    return el;
  }

  append(ev) {
    switch (ev.event) {
      case "prompt.queued": return this.queued(ev);
      case "prompt.started": {
        const turn = this.turn(ev.prompt_id);
        turn.el.classList.add("running");
        turn.badge?.replaceChildren("running");
        return;
      }
      case "claude": return this.claude(ev);
      case "output": return this.output(ev);
      case "prompt.finished": return this.finished(ev);
      case "session.reset":
        this.lastOutput = null;
        this.root.appendChild(h("p", { class: "divider" }, "Session reset: the next prompt starts a new conversation"));
        return;
      case "permission.request": return this.permissionRequest(ev);
      case "permission.resolved": return this.permissionResolved(ev);
    }
  }

  queued(ev) {
    const turn = this.turn(ev.prompt_id);
    turn.badge = h("span", { class: "badge" }, ev.position > 0 ? "queued" : "starting");
    turn.el.insertBefore(h("div", { class: "msg user" },
      h("div", { class: "who" }, "You ", turn.badge),
      h("div", { class: "text" }, String(ev.prompt ?? ""))), turn.body);
  }

  claude(ev) {
    const m = ev.message || {};
    if (m.type === "assistant") {
      this.dropStream(ev.prompt_id);
      const content = Array.isArray(m.message?.content) ? m.message.content : [];
      for (const block of content) this.block(ev, block);
    } else if (m.type === "user") {
      const content = Array.isArray(m.message?.content) ? m.message.content : [];
      for (const block of content) {
        if (block?.type === "tool_result") this.toolResult(ev, block);
      }
    } else if (m.type === "stream_event") {
      const e = m.event || {};
      if (e.type === "content_block_delta" && e.delta?.type === "text_delta") {
        let stream = this.streams.get(ev.prompt_id);
        if (!stream) {
          stream = this.add(ev.prompt_id, h("div", { class: "msg assistant streaming" }));
          this.streams.set(ev.prompt_id, stream);
        }
        stream.appendChild(document.createTextNode(String(e.delta.text ?? "")));
      }
    } else if (m.type === "system" && m.subtype === "init") {
      const bits = [m.model, m.permissionMode && m.permissionMode !== "default" ? m.permissionMode + " mode" : null].filter(Boolean);
      this.add(ev.prompt_id, h("p", { class: "meta" }, "Claude Code " + (m.claude_code_version || "") + (bits.length ? " · " + bits.join(" · ") : "")));
    } else if (m.type === "result" && m.is_error && (m.result || m.errors)) {
      // Kept aside until the prompt's outcome is known: a prompt that was
      // stopped on purpose ends with the CLI's own diagnostics, which are
      // not a failure to show.
      const turn = this.turn(ev.prompt_id);
      turn.resultError = this.add(ev.prompt_id, h("p", { class: "error-text" }, bounded(m.result || [].concat(m.errors).join("\n"), 4000)));
    }
  }

  dropStream(promptId) {
    const stream = this.streams.get(promptId);
    if (stream) {
      stream.remove();
      this.streams.delete(promptId);
    }
  }

  block(ev, block) {
    if (!block || typeof block !== "object") return;
    if (block.type === "text") {
      this.add(ev.prompt_id, h("div", { class: "msg assistant markdown" }, renderMarkdown(block.text)));
    } else if (block.type === "thinking") {
      this.add(ev.prompt_id, this.details("think-" + ev.seq, "Thinking", h("div", { class: "thinking" }, String(block.thinking ?? ""))));
    } else if (block.type === "tool_use") {
      this.toolCard(ev.prompt_id, block.id, block.name, block.input);
    }
  }

  toolCard(promptId, id, name, input) {
    const permission = h("span", { class: "tool-permission" });
    const outcome = h("span", { class: "tool-outcome" });
    const status = h("span", { class: "tool-status" }, permission, outcome);
    const card = h("section", { class: "tool", "aria-label": "Tool " + name },
      h("header", {}, h("span", { class: "tool-name" }, String(name ?? "tool")), " ",
        h("span", { class: "tool-target" }, toolTarget(name, input)), " ", status),
      toolBody(name, input));
    const entry = { card, permission, outcome, result: null };
    if (id) this.tools.set(id, entry);
    this.add(promptId, card);
    return entry;
  }

  toolResult(ev, block) {
    let entry = this.tools.get(block.tool_use_id);
    if (!entry) entry = this.toolCard(ev.prompt_id, null, "Tool result", null);
    const text = resultText(block.content);
    const failed = block.is_error === true;
    entry.card.classList.toggle("failed", failed);
    entry.outcome.replaceChildren(failed ? h("span", { class: "badge bad" }, "error") : "");
    const output = this.details("out-" + (block.tool_use_id || ev.seq), failed ? "Error output" : "Output",
      h("pre", { class: "output" }, bounded(text)));
    if (entry.result) entry.result.replaceWith(output);
    else entry.card.appendChild(output);
    entry.result = output;
  }

  output(ev) {
    const prev = this.lastOutput;
    if (prev && prev.promptId === ev.prompt_id && prev.stream === ev.stream) {
      prev.pre.appendChild(document.createTextNode((ev.stream === "stdout" ? "\n" : "") + String(ev.text ?? "")));
      return;
    }
    const pre = h("pre", { class: "output" }, String(ev.text ?? ""));
    this.add(ev.prompt_id, this.details("cli-" + ev.seq, "CLI " + ev.stream, pre));
    this.lastOutput = { promptId: ev.prompt_id, stream: ev.stream, pre };
  }

  finished(ev) {
    this.dropStream(ev.prompt_id);
    const turn = this.turn(ev.prompt_id);
    if (turn.resultError && STOPPED.has(ev.status)) turn.resultError.remove();
    turn.el.classList.remove("running");
    turn.badge?.replaceChildren(STATUS_TEXT[ev.status] || String(ev.status));
    const facts = [formatDuration(ev.duration_ms), formatCost(ev.cost_usd),
      typeof ev.num_turns === "number" ? ev.num_turns + (ev.num_turns === 1 ? " turn" : " turns") : null].filter(Boolean);
    this.add(ev.prompt_id, h("footer", { class: "outcome " + ev.status },
      h("span", { class: "badge " + (ev.status === "completed" ? "good" : "bad") }, STATUS_TEXT[ev.status] || String(ev.status)),
      facts.length ? " " + facts.join(" · ") : "",
      ev.error ? h("span", { class: "error-text" }, " " + bounded(ev.error, 2000)) : null));
  }

  permissionRequest(ev) {
    let entry = ev.tool_use_id && this.tools.get(ev.tool_use_id);
    if (!entry) entry = this.toolCard(ev.prompt_id, ev.tool_use_id, ev.tool_name, ev.input);
    entry.permission.replaceChildren(h("span", { class: "badge warn" }, "waiting for permission"));
    this.permissions.set(ev.request_id, entry);
  }

  permissionResolved(ev) {
    const entry = this.permissions.get(ev.request_id);
    if (!entry) return;
    const by = ev.by === "client" ? "" : " (" + ev.by + ")";
    entry.permission.replaceChildren(ev.behavior === "allow"
      ? h("span", { class: "badge good" }, "allowed" + by)
      : h("span", { class: "badge bad" }, "denied" + by));
  }
}

export class ConversationView {
  constructor(store, sync) {
    this.store = store;
    this.sync = sync;
    this.log = $("log");
    this.older = $("older");
    this.openDetails = new Set();
    this.rendered = 0;
    this.renderer = null;
    this.older.addEventListener("click", () => this.loadOlder());
    // A reader at the bottom stays there when the space shrinks (a
    // permission request or the keyboard appears) or the log grows.
    const scroller = $("scroller");
    this.stuck = true;
    this.setTop = null;
    scroller.addEventListener("scroll", () => {
      // Only the reader's own scrolling unsticks: a scroll event that
      // follows our own move (seen after the space shrank) does not.
      if (scroller.scrollTop !== this.setTop) this.stuck = this.nearBottom();
    }, { passive: true });
    new ResizeObserver(() => { if (this.stuck) this.toBottom(); }).observe(scroller);
    // Reaching the top of the log asks for the page before it.
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: $("scroller") }).observe(this.older);
    store.on("selected", () => { this.openDetails.clear(); this.full(false); });
    store.on("deleted", () => this.full(false));
    store.on("conversation", ({ path, kind }) => {
      if (path === store.selected) this.full(kind === "prepend" || kind === "resumed");
    });
    store.on("older", ({ path }) => { if (path === store.selected) this.updateOlder(); });
    store.on("append", ({ path }) => { if (path === store.selected) this.appendNew(); });
    this.full(false);
  }

  loadOlder() {
    const c = this.store.current();
    if (c && c.ready && c.hasMore && !c.loadingOlder) this.sync.loadOlder(c.path);
  }

  updateOlder() {
    const c = this.store.current();
    const more = Boolean(c && c.ready && c.hasMore);
    this.older.hidden = !more;
    this.older.disabled = Boolean(c?.loadingOlder);
    this.older.textContent = c?.loadingOlder ? "Loading earlier events…" : "Load earlier events";
  }

  toBottom() {
    const s = $("scroller");
    s.scrollTop = s.scrollHeight;
    this.setTop = s.scrollTop;
    this.stuck = true;
  }

  nearBottom() {
    const s = $("scroller");
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  /** Render the whole conversation; `keep`: stay where the reader was. */
  full(keep) {
    const scroller = $("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const c = this.store.current();
    clear(this.log);
    this.renderer = new EventRenderer(this.log, this.openDetails);
    this.rendered = 0;
    this.log.setAttribute("aria-busy", c && !c.ready ? "true" : "false");
    if (!c) {
      this.log.appendChild(h("p", { class: "empty" },
        this.store.projects.size ? "Choose a project." : "Create a project to start."));
    } else if (!c.ready) {
      this.log.appendChild(h("p", { class: "empty" }, "Loading…"));
    } else {
      if (c.lost) this.log.appendChild(h("p", { class: "divider" }, "Some older events are no longer stored on the server."));
      for (const ev of c.sorted()) this.renderer.append(ev);
      this.log.dataset.firstSeq = String(c.low);
      this.rendered = c.high;
      if (!c.events.size) this.log.appendChild(h("p", { class: "empty" }, "No prompts yet. Say what Claude should do below."));
    }
    this.updateOlder();
    // New pages come in above: keep the reader's distance from the bottom.
    if (keep) {
      scroller.scrollTop = scroller.scrollHeight - fromBottom;
      this.setTop = scroller.scrollTop;
      this.stuck = this.nearBottom();
    } else {
      this.toBottom();
    }
  }

  appendNew() {
    const c = this.store.current();
    if (!c || !c.ready || !this.renderer) return;
    const stick = this.stuck || this.nearBottom();
    this.log.querySelector(":scope > p.empty")?.remove();
    for (let seq = this.rendered + 1; seq <= c.high; seq++) {
      const ev = c.events.get(seq);
      if (ev) this.renderer.append(ev);
    }
    this.rendered = c.high;
    if (stick) this.toBottom();
  }
}
