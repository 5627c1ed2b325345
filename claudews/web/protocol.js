// The wire protocol (docs/protocol.rst): one WebSocket, requests matched
// to replies by id, events and project frames handed on, and reconnection
// with backoff. What to do after a (re)connection belongs to the caller
// (onOpen): this module knows frames, not projects.

const BACKOFF_MIN = 500;
const BACKOFF_MAX = 15000;

export class RequestError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/**
 * The WebSocket URL: /ws on this page's own host, never one a link names
 * (the token goes wherever the page connects).
 */
export function socketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + "/ws";
}

export class Connection {
  /**
   * handlers: onOpen(), onEvent(frame), onProject(frame),
   * onState({state, retryIn}), onRefused() when the server answers HTTP
   * but refuses the handshake (a wrong or missing token).
   */
  constructor(url, token, handlers) {
    this.url = url;
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.backoff = BACKOFF_MIN;
    this.timer = null;
    this.stopped = false;
    this.state = "connecting";
    this._wake = () => { if (this.state !== "open") this.retryNow(); };
    window.addEventListener("online", this._wake);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this._wake();
    });
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this._wake);
    if (this.ws) this.ws.close(1000);
    this._setState("closed");
  }

  retryNow() {
    if (this.stopped || this.state === "open" || this.state === "connecting") return;
    clearTimeout(this.timer);
    this._connect();
  }

  /** Send a request; resolves with its result, rejects with a RequestError. */
  request(type, fields = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RequestError("disconnected", "Not connected to the server"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...fields, type, id }));
    });
  }

  _setState(state, retryIn) {
    this.state = state;
    this.handlers.onState?.({ state, retryIn });
  }

  _connect() {
    this._setState("connecting");
    const url = this.url + (this.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.token);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this._setState("refused");
      this.handlers.onRefused?.(String(e.message || e));
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff = BACKOFF_MIN;
      this._setState("open");
      this.handlers.onOpen?.();
    };
    ws.onmessage = (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      if (frame.type === "result") {
        const waiter = this.pending.get(frame.id);
        if (!waiter) return;
        this.pending.delete(frame.id);
        if (frame.ok) waiter.resolve(frame.result);
        else waiter.reject(new RequestError(frame.error?.code || "error", frame.error?.message));
      } else if (frame.type === "event") {
        this.handlers.onEvent?.(frame);
      } else if (frame.type === "project") {
        this.handlers.onProject?.(frame);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const waiter of this.pending.values()) {
        waiter.reject(new RequestError("disconnected", "The connection was lost"));
      }
      this.pending.clear();
      if (this.stopped) return;
      if (opened) {
        // It worked a moment ago: the network or the server went away.
        this._retryLater();
      } else {
        this._afterFailedHandshake();
      }
    };
  }

  async _afterFailedHandshake() {
    // A browser shows every refused handshake as close code 1006, like a
    // server that is down. Ask the server over plain HTTP: if it answers,
    // it is up and refused us, and retrying with the same token only gets
    // this address blocked (docs/protocol.rst, 429).
    let reachable = false;
    try {
      const http = this.url.replace(/^ws/, "http").replace(/\/ws(\?.*)?$/, "/health");
      await fetch(http, { mode: "no-cors", cache: "no-store", credentials: "omit" });
      reachable = true;
    } catch {
      reachable = false;
    }
    if (this.stopped) return;
    if (reachable) {
      this._setState("refused");
      this.handlers.onRefused?.();
    } else {
      this._retryLater();
    }
  }

  _retryLater() {
    const delay = Math.round(this.backoff * (0.75 + Math.random() * 0.5));
    this.backoff = Math.min(BACKOFF_MAX, this.backoff * 2);
    this._setState("waiting", delay);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
  }
}
