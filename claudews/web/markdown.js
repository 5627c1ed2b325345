// Model text as Markdown: parsed by marked, with raw HTML shown as text,
// then sanitised by DOMPurify into a fragment (never through innerHTML).
// Links open in a new tab with rel=noopener; only http(s) and mailto
// links keep their target. The CSP is the second wall.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => escapes[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // Raw HTML in model output is shown as the text it is.
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? "");
    },
  },
});

const SAFE_LINK = /^(https?:|mailto:)/i;

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_LINK.test(href.trim())) {
      node.removeAttribute("href");
    } else {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "video", "audio", "source", "picture"],
  FORBID_ATTR: ["style", "class", "id", "srcset"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

/** A sanitised DocumentFragment for the Markdown `text`. */
export function renderMarkdown(text) {
  let html;
  try {
    html = marked.parse(String(text ?? ""), { async: false });
  } catch (e) {
    const fragment = document.createDocumentFragment();
    const pre = document.createElement("pre");
    pre.textContent = String(text ?? "");
    fragment.appendChild(pre);
    return fragment;
  }
  return DOMPurify.sanitize(html, PURIFY);
}
