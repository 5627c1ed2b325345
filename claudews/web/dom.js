// Building DOM nodes without ever parsing a string as HTML: every text
// given here becomes a text node, so untrusted text stays text.

/**
 * h("div", {class: "x", onclick: fn, "aria-label": "..."}, child, "text", ...)
 * Attributes named on* are event listeners; false/null/undefined are left
 * out; children may be nodes, strings, numbers, arrays or null.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "text") {
      el.textContent = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function $(id) {
  return document.getElementById(id);
}

/** A short, single-line version of a text, for labels. */
export function excerpt(text, max = 60) {
  const line = String(text ?? "").replace(/\s+/g, " ").trim();
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

export function formatDuration(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return null;
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s - m * 60) + " s";
}

export function formatCost(usd) {
  if (typeof usd !== "number" || !isFinite(usd)) return null;
  return "$" + (usd < 0.01 ? usd.toFixed(4) : usd.toFixed(2));
}
