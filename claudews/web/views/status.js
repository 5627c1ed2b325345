// The connection indicator and the notification switch in the top bar.

import { $ } from "../dom.js";

const TEXT = {
  open: "Connected",
  connecting: "Connecting…",
  waiting: "Reconnecting…",
  refused: "Not signed in",
  closed: "Disconnected",
};

export class StatusView {
  constructor(store, notifier) {
    this.el = $("conn");
    this.notifier = notifier;
    const button = $("notify");
    button.hidden = !notifier.supported;
    button.addEventListener("click", async () => {
      await notifier.toggle();
      this.notifyButton();
    });
    store.on("connection", () => {
      const { state, retryIn } = store.connection;
      this.el.textContent = state === "waiting" && retryIn
        ? "Reconnecting in " + Math.max(1, Math.round(retryIn / 1000)) + " s"
        : TEXT[state] || state;
      this.el.dataset.state = state;
    });
    this.notifyButton();
  }

  notifyButton() {
    const button = $("notify");
    button.textContent = this.notifier.enabled ? "Notifications on" : "Notify me";
    button.setAttribute("aria-pressed", String(this.notifier.enabled));
  }
}
