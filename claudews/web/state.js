// What the page knows: the server, its projects, and for each project the
// events held (by seq, one contiguous run), the prompts they describe and
// the permission requests waiting. Views read it and listen for changes;
// only sync.js writes to it.

export class Conversation {
  constructor(path) {
    this.path = path;
    this.reset(null);
  }

  reset(epoch) {
    this.epoch = epoch;
    this.events = new Map();
    // Events held are exactly those with low <= seq <= high.
    this.low = null;
    this.high = 0;
    this.hasMore = false;
    this.ready = false;
    this.loadingOlder = false;
    this.lost = false;
    this.running = null;
    this.pending = new Map();
    this.prompts = new Map();
    // Events up to this seq were published before this page subscribed:
    // nothing to notify about.
    this.liveAfter = Infinity;
  }

  sorted() {
    return [...this.events.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Waiting prompts, oldest first. */
  queued() {
    return [...this.prompts.values()].filter((p) => p.status === "queued").sort((a, b) => a.seq - b.seq);
  }

  /** Track what one event says about its prompt (newest word wins). */
  notePrompt(event) {
    const id = event.prompt_id;
    if (!id) return;
    const status = { "prompt.queued": "queued", "prompt.started": "running", "prompt.finished": "finished" }[event.event];
    let entry = this.prompts.get(id);
    if (!entry) {
      entry = { id, text: null, status: null, seq: 0 };
      this.prompts.set(id, entry);
    }
    if (event.event === "prompt.queued") entry.text = event.prompt;
    if (status && event.seq > entry.seq) {
      entry.status = status;
      entry.seq = event.seq;
    }
  }
}

export class Store extends EventTarget {
  constructor() {
    super();
    this.connection = { state: "connecting", retryIn: null };
    this.info = null;
    this.projects = new Map();
    this.conversations = new Map();
    this.selected = null;
    this.watching = false;
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, listener) {
    this.addEventListener(type, (e) => listener(e.detail));
  }

  conversation(path) {
    let c = this.conversations.get(path);
    if (!c) {
      c = new Conversation(path);
      this.conversations.set(path, c);
    }
    return c;
  }

  current() {
    return this.selected ? this.conversation(this.selected) : null;
  }

  projectRoots() {
    const info = this.info || {};
    const roots = info.project_roots ?? info.limits?.project_roots;
    return Array.isArray(roots) ? roots.filter((r) => typeof r === "string") : [];
  }

  clientOptions() {
    const allowed = this.info?.limits?.client_options;
    return Array.isArray(allowed) ? allowed : null;
  }

  /**
   * Permission requests waiting across every project: a subscription's own
   * count while it is live, else the feed's (what a project left behind
   * still holds is no longer kept up to date).
   */
  pendingCount() {
    let n = 0;
    for (const p of this.projects.values()) {
      const c = this.conversations.get(p.path);
      n += c && c.subscribed ? c.pending.size : (p.pending_permissions || 0);
    }
    return n;
  }
}
