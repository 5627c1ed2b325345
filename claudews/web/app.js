// Start-up: the token (from #token=..., then the browser's storage), the
// sign-in form, the connection, and the views.

import { Connection, socketUrl } from "./protocol.js";
import { Store } from "./state.js";
import { Sync } from "./sync.js";
import { Notifier } from "./notify.js";
import { $ } from "./dom.js";
import { ConversationView } from "./views/conversation.js";
import { PermissionsView } from "./views/permissions.js";
import { ComposerView } from "./views/composer.js";
import { ProjectsView, projectHref } from "./views/projects.js";
import { StatusView } from "./views/status.js";

const TOKEN_KEY = "claudews.token";
const LAST_KEY = "claudews.project";

const store = new Store();
const sync = new Sync(store);
const notifier = new Notifier();
let connection = null;

function tokenFromHash() {
  const match = location.hash.match(/^#(?:.*&)?token=([^&]*)/);
  if (!match) return;
  let token = match[1];
  try {
    token = decodeURIComponent(token);
  } catch {}
  if (token) localStorage.setItem(TOKEN_KEY, token);
  // The token leaves the address bar (and the history) at once.
  history.replaceState(null, "", location.pathname + location.search);
}

function selectedFromHash() {
  const match = location.hash.match(/^#p=(.*)$/);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function select(path) {
  if (path && selectedFromHash() !== path) {
    location.hash = projectHref(path);
    return; // hashchange selects it
  }
  route();
}

function route() {
  const path = selectedFromHash();
  if (path) localStorage.setItem(LAST_KEY, path);
  setDrawer(false);
  sync.select(path);
}

function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  $("drawer-toggle").setAttribute("aria-expanded", String(open));
}

function signIn(message) {
  if (connection) connection.stop();
  connection = null;
  document.body.classList.add("signed-out");
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function start(token) {
  document.body.classList.remove("signed-out");
  $("signin").hidden = true;
  connection = new Connection(socketUrl(location), token, {
    onOpen: () => sync.onOpen(),
    onEvent: (frame) => sync.onEvent(frame),
    onProject: (frame) => sync.onProject(frame),
    onState: (state) => sync.onState(state),
    onRefused: () => signIn("The server refused the connection: the token is wrong or missing. " +
      "Use the link the server printed when it started, or paste its token."),
  });
  sync.attach(connection);
  connection.start();
}

sync.onNotice = (kind, detail) => {
  const name = String(detail.path || "").split("/").pop() || detail.path;
  if (kind === "permission") notifier.show("Claude needs your permission", String(detail.tool_name) + " in " + name, detail.request_id);
  else if (kind === "finished") notifier.show("Prompt " + detail.status, name, detail.prompt_id);
  else if (kind === "waiting") notifier.show("Claude needs your permission", name, "wait-" + detail.path);
  else if (kind === "idle") notifier.show("Claude finished", name, "idle-" + detail.path);
};

new StatusView(store, notifier);
new ProjectsView(store, sync, select);
new ConversationView(store, sync);
new PermissionsView(store, sync);
new ComposerView(store, sync);

$("drawer-toggle").addEventListener("click", () => setDrawer(!document.body.classList.contains("drawer-open")));
$("drawer-scrim").addEventListener("click", () => setDrawer(false));
// Choosing a project closes the drawer, even the project already shown.
$("project-list").addEventListener("click", (e) => { if (e.target.closest("a")) setDrawer(false); });
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && document.body.classList.contains("drawer-open")) setDrawer(false);
});
$("signout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  signIn("Signed out.");
});
$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  start(token);
});
window.addEventListener("hashchange", () => {
  tokenFromHash();
  route();
});
// A first visit lands on the last project used, or on the list.
let landed = false;
store.on("projects", () => {
  if (landed || store.selected || location.hash) return;
  landed = true;
  const last = localStorage.getItem(LAST_KEY);
  if (last && store.projects.has(last)) select(last);
  else if (window.matchMedia("(max-width: 760px)").matches) setDrawer(true);
});

tokenFromHash();
route();
const token = localStorage.getItem(TOKEN_KEY);
if (token) start(token);
else signIn();
