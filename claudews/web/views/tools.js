// How a tool call reads: Bash as its command, Read/Glob/Grep as their
// target, Edit/MultiEdit/Write as a diff, anything else as its input.
// Shared by the conversation and the permission panel.

import { h, excerpt } from "../dom.js";
import { diffLines, hunks } from "../diff.js";
import { renderMarkdown } from "../markdown.js";

const MAX_SHOWN = 20000;

/** Text cut to a size a page can hold, saying what was left out. */
export function bounded(text, max = MAX_SHOWN) {
  text = String(text ?? "");
  if (text.length <= max) return text;
  return text.slice(0, max) + "\n… " + (text.length - max) + " more characters";
}

export function diffView(before, after) {
  const lines = hunks(diffLines(before, after));
  const shown = lines.slice(0, 400);
  return h("pre", { class: "diff" },
    shown.map((line) => line.op === "…"
      ? h("span", { class: "skip" }, "⋯ " + line.count + " unchanged line" + (line.count === 1 ? "" : "s") + "\n")
      : h("span", { class: { "+": "add", "-": "del", " ": "ctx" }[line.op] }, line.op + " " + bounded(line.text, 2000) + "\n")),
    lines.length > shown.length ? h("span", { class: "skip" }, "⋯ " + (lines.length - shown.length) + " more lines\n") : null);
}

const str = (v) => (typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v));

/** A one-line summary of a tool call: what it acts on. */
export function toolTarget(name, input) {
  input = input || {};
  switch (name) {
    case "Bash": return input.description || excerpt(input.command, 80);
    case "Read": case "Write": case "Edit": case "MultiEdit": case "NotebookEdit":
      return str(input.file_path || input.notebook_path);
    case "Glob": return str(input.pattern) + (input.path ? " in " + input.path : "");
    case "Grep": return str(input.pattern) + (input.path ? " in " + input.path : "") + (input.glob ? " (" + input.glob + ")" : "");
    case "LS": return str(input.path);
    case "WebFetch": return str(input.url);
    case "WebSearch": return str(input.query);
    case "Task": case "Agent": return str(input.description);
    case "TodoWrite": return (input.todos?.length ?? 0) + " items";
    case "ExitPlanMode": return "plan ready for review";
    case "AskUserQuestion": return excerpt(input.questions?.[0]?.question, 80);
    default: return "";
  }
}

/** The body of a tool call: the command, the diff, the input. */
export function toolBody(name, input) {
  input = input || {};
  switch (name) {
    case "Bash":
      return h("pre", { class: "command" }, "$ " + bounded(input.command));
    case "Edit":
      return diffView(str(input.old_string), str(input.new_string));
    case "MultiEdit":
      return h("div", {}, (Array.isArray(input.edits) ? input.edits : []).map((e) => diffView(str(e?.old_string), str(e?.new_string))));
    case "Write":
      return diffView("", str(input.content));
    case "Read": case "Glob": case "Grep": case "LS": case "WebFetch": case "WebSearch":
      return null;
    case "TodoWrite":
      return h("ul", { class: "todos" }, (Array.isArray(input.todos) ? input.todos : []).map((t) =>
        h("li", { class: "todo " + str(t?.status) }, { completed: "☑ ", in_progress: "▶ " }[t?.status] || "☐ ", str(t?.content))));
    case "ExitPlanMode":
      return h("div", { class: "markdown plan" }, renderMarkdown(str(input.plan)));
    case "AskUserQuestion":
      return h("ul", { class: "questions" }, (Array.isArray(input.questions) ? input.questions : []).map((q) =>
        h("li", {}, str(q?.question), " ", h("span", { class: "muted" },
          (Array.isArray(q?.options) ? q.options : []).map((o) => str(o?.label)).join(" · ")))));
    case "Task": case "Agent":
      return h("details", {}, h("summary", {}, "Instructions"), h("pre", { class: "wrap" }, bounded(str(input.prompt))));
    default:
      return h("details", {}, h("summary", {}, "Input"), h("pre", { class: "wrap" }, bounded(JSON.stringify(input, null, 2))));
  }
}

/** The text of a tool_result's content (a string or a list of blocks). */
export function resultText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b?.type === "text" ? str(b.text) : b?.type ? "[" + b.type + "]" : "")).join("\n");
  }
  return content === undefined || content === null ? "" : JSON.stringify(content);
}
