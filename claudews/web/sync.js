// Keeps the Store in step with the server through a Connection: the
// project feed, the selected project's subscription (resumed with `since`
// and `epoch` after every reconnection, so nothing is missed or doubled),
// older history a page at a time, and the requests the views make.

const POLL_MS = 5000;

export class Sync {
  constructor(store) {
    this.store = store;
    this.conn = null;
    this.pollTimer = null;
    /** Called with (kind, detail) for what deserves a notification. */
    this.onNotice = null;
  }

  attach(conn) {
    this.conn = conn;
  }

  request(type, fields) {
    return this.conn.request(type, fields);
  }

  // -- connection life

  onState(state) {
    this.store.connection = state;
    if (state.state !== "open") {
      for (const c of this.store.conversations.values()) {
        c.accepting = false;
        c.subscribed = false;
      }
    }
    this.store.emit("connection");
  }

  async onOpen() {
    const store = this.store;
    this.request("server.info").then((info) => {
      store.info = info;
      store.emit("info");
    }, () => {});
    await this.watch();
    if (store.selected) await this.subscribe(store.selected);
  }

  async watch() {
    clearInterval(this.pollTimer);
    try {
      const result = await this.request("watch");
      this.store.watching = true;
      this.setProjects(result.projects);
    } catch (e) {
      if (e.code !== "unknown_type") return;
      // A server without the v1.1 feed: poll the list instead.
      this.store.watching = false;
      await this.refreshProjects();
      this.pollTimer = setInterval(() => this.refreshProjects(), POLL_MS);
    }
  }

  async refreshProjects() {
    try {
      const result = await this.request("project.list");
      this.setProjects(result.projects);
    } catch {
      // Disconnected: the next onOpen lists them again.
    }
  }

  setProjects(list) {
    const store = this.store;
    store.projects = new Map((list || []).map((p) => [p.path, p]));
    store.emit("projects");
    if (store.selected && !store.projects.has(store.selected)) this.forget(store.selected);
  }

  onProject(frame) {
    const store = this.store;
    const project = frame.project;
    if (!project || typeof project.path !== "string") return;
    if (frame.change === "deleted") {
      store.projects.delete(project.path);
      this.forget(project.path);
    } else {
      const before = store.projects.get(project.path);
      store.projects.set(project.path, project);
      // Projects this page does not follow event by event still deserve a
      // notice when they need someone.
      const followed = store.conversations.get(project.path)?.subscribed;
      if (before && !followed) {
        if ((project.pending_permissions || 0) > (before.pending_permissions || 0)) this.onNotice?.("waiting", project);
        if (before.status === "running" && project.status !== "running") this.onNotice?.("idle", project);
      }
    }
    store.emit("projects");
  }

  forget(path) {
    const store = this.store;
    store.conversations.delete(path);
    if (store.selected === path) {
      store.emit("deleted", { path });
    }
  }

  // -- the selected project

  select(path) {
    const store = this.store;
    const previous = store.selected;
    if (previous === path) return;
    store.selected = path;
    store.emit("selected");
    if (previous && this.conn?.state === "open") {
      const c = store.conversations.get(previous);
      if (c) {
        c.subscribed = false;
        c.accepting = false;
      }
      this.request("unsubscribe", { path: previous }).catch(() => {});
    }
    if (path && this.conn?.state === "open") this.subscribe(path);
  }

  async subscribe(path) {
    const store = this.store;
    const c = store.conversation(path);
    const resume = c.ready && c.epoch !== null;
    c.accepting = false;
    let reply;
    try {
      reply = await this.request("subscribe", resume ? { path, since: c.high, epoch: c.epoch } : { path });
      if (resume && (reply.epoch !== c.epoch || reply.last_seq < c.high)) {
        // Its history started over: what we hold means nothing now. The
        // server replays from 1 for that request; subscribing again
        // without `since` replaces it, and the frames in between are
        // ignored (accepting is still false).
        c.reset(reply.epoch);
        reply = await this.request("subscribe", { path });
        return this._fresh(c, reply);
      }
    } catch (e) {
      if (e.code === "project_not_found") this.forget(path);
      return;
    }
    if (store.selected !== path) return;
    if (!resume) return this._fresh(c, reply);
    if (reply.first_seq > c.high + 1) c.lost = true;
    this._adopt(c, reply);
    store.emit("conversation", { path, kind: "resumed" });
  }

  _adopt(c, reply) {
    c.epoch = reply.epoch;
    c.running = reply.running;
    c.pending = new Map((reply.pending_permissions || []).map((p) => [p.request_id, p]));
    c.liveAfter = reply.last_seq;
    c.accepting = true;
    c.subscribed = true;
    if (reply.project) {
      this.store.projects.set(reply.project.path, { ...this.store.projects.get(reply.project.path), ...reply.project });
      this.store.emit("projects");
    }
  }

  async _fresh(c, reply) {
    c.reset(reply.epoch);
    c.high = reply.last_seq;
    c.low = reply.last_seq + 1;
    c.hasMore = reply.last_seq >= reply.first_seq;
    this._adopt(c, reply);
    this.store.emit("conversation", { path: c.path, kind: "loading" });
    if (c.hasMore) await this.loadOlder(c.path);
    c.ready = true;
    this.store.emit("conversation", { path: c.path, kind: "reset" });
  }

  /** The page of history just before what is held. */
  async loadOlder(path) {
    const c = this.store.conversations.get(path);
    if (!c || c.loadingOlder || !c.hasMore) return;
    c.loadingOlder = true;
    this.store.emit("older", { path });
    const epoch = c.epoch;
    try {
      const page = await this.request("history", { path, before: c.low });
      if (this.store.conversations.get(path) !== c || c.epoch !== epoch) return;
      for (const event of page.events) {
        if (event.seq < c.low && !c.events.has(event.seq)) {
          c.events.set(event.seq, event);
          c.notePrompt(event);
        }
      }
      if (page.events.length) c.low = Math.min(c.low, page.events[0].seq);
      c.hasMore = Boolean(page.has_more) && page.events.length > 0;
    } catch {
      // Disconnected or gone: the next subscription starts again.
    } finally {
      c.loadingOlder = false;
    }
    if (c.ready) this.store.emit("conversation", { path, kind: "prepend" });
  }

  onEvent(event) {
    const store = this.store;
    const c = store.conversations.get(event.path);
    if (!c || !c.accepting) return;
    if (event.seq <= c.high) return;
    if (event.seq !== c.high + 1) console.warn("claudews: gap before seq", event.seq, "after", c.high);
    c.events.set(event.seq, event);
    c.high = event.seq;
    if (c.low === null || c.low > event.seq) c.low = event.seq;
    c.notePrompt(event);
    const live = event.seq > c.liveAfter;
    switch (event.event) {
      case "prompt.started":
        c.running = event.prompt_id;
        break;
      case "prompt.finished":
        if (c.running === event.prompt_id) c.running = null;
        if (live) this.onNotice?.("finished", event);
        break;
      case "permission.request":
        c.pending.set(event.request_id, event);
        if (live) this.onNotice?.("permission", event);
        break;
      case "permission.resolved":
        c.pending.delete(event.request_id);
        break;
    }
    if (!store.watching && /^prompt\.|^permission\./.test(event.event)) this._refreshSoon();
    store.emit("append", { path: event.path, event });
  }

  _refreshSoon() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => this.refreshProjects(), 100);
  }

  // -- what the views ask for

  async createProject(path) {
    const result = await this.request("project.create", { path });
    if (!this.store.watching) await this.refreshProjects();
    else this.store.projects.set(result.project.path, result.project);
    this.store.emit("projects");
    return result.project;
  }

  async deleteProject(path) {
    await this.request("project.delete", { path });
    this.store.projects.delete(path);
    this.forget(path);
    this.store.emit("projects");
  }

  prompt(path, text, options) {
    return this.request("prompt", { path, prompt: text, options });
  }

  cancel(path, promptId) {
    return this.request("cancel", promptId ? { path, prompt_id: promptId } : { path });
  }

  resetSession(path) {
    return this.request("session.reset", { path });
  }

  respond(path, requestId, behavior, extra = {}) {
    return this.request("permission.respond", { path, request_id: requestId, behavior, ...extra });
  }
}
