// Browser notifications, after the person opts in, only while the tab is
// hidden: a permission request or a finished prompt somewhere.

const KEY = "claudews.notify";

export class Notifier {
  constructor() {
    this.supported = "Notification" in window;
    this.enabled = this.supported && localStorage.getItem(KEY) === "on" && Notification.permission === "granted";
  }

  async toggle() {
    if (!this.supported) return;
    if (this.enabled) {
      this.enabled = false;
    } else {
      const permission = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
      this.enabled = permission === "granted";
    }
    localStorage.setItem(KEY, this.enabled ? "on" : "off");
  }

  show(title, body, tag) {
    if (!this.enabled || document.visibilityState === "visible") return;
    try {
      const n = new Notification(title, { body, tag });
      n.onclick = () => { window.focus(); n.close(); };
    } catch {
      // Some platforms only notify from a service worker: not worth one.
    }
  }
}
