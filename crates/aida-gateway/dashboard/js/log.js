// A subtask's log as it streams: every line is kept (up to LIMIT), and only
// the lines in view are in the page, drawn at most once per frame. A log of
// a hundred thousand lines costs what one screenful costs. It follows the
// tail until the reader scrolls up, and again once they scroll back down.

import { h } from "./util.js";

/** Lines held per subtask; older ones are let go in blocks beyond it. */
export const LIMIT = 200000;
/** The height of one line: fixed, so a line's place is its index. */
const LINE_PX = 18;
/** Lines drawn beyond the view on each side, so a scroll finds them ready. */
const MARGIN = 30;

/** The lines of one subtask: what the stream delivered, oldest first. */
export class LogLines {
  constructor() {
    this.lines = [];
    this.dropped = 0;
  }

  push(stream, line) {
    this.lines.push({ stream, line });
    if (this.lines.length > LIMIT + LIMIT / 10) {
      const over = this.lines.length - LIMIT;
      this.lines.splice(0, over);
      this.dropped += over;
    }
  }
}

export class LogView {
  constructor() {
    this.source = new LogLines();
    this.following = true;
    this.frame = 0;
    this.drawn = null;
    this.rows = h("div.log-rows");
    this.space = h("div.log-space", {}, this.rows);
    this.el = h("div.log", { id: "log", tabindex: 0, role: "log", "aria-label": "log of the selected subtask" }, this.space);
    this.count = h("span.muted", { id: "log-count", "aria-live": "off" });
    this.el.addEventListener("scroll", () => {
      this.following = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - LINE_PX;
      this.schedule();
    });
  }

  /** Shows another subtask's lines, from their tail. */
  show(source) {
    this.source = source;
    this.following = true;
    this.drawn = null;
    this.schedule();
  }

  /** The shown lines grew. */
  grew() { this.schedule(); }

  schedule() {
    this.frame ||= requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  draw() {
    const { lines, dropped } = this.source;
    const n = lines.length;
    this.space.style.height = `${n * LINE_PX}px`;
    if (this.following) this.el.scrollTop = this.el.scrollHeight;
    const first = Math.max(0, Math.floor(this.el.scrollTop / LINE_PX) - MARGIN);
    const last = Math.min(n, Math.ceil((this.el.scrollTop + this.el.clientHeight) / LINE_PX) + MARGIN);
    const key = `${dropped}:${first}:${last}`;
    if (key !== this.drawn) {
      this.drawn = key;
      this.rows.style.transform = `translateY(${first * LINE_PX}px)`;
      this.rows.replaceChildren(...lines.slice(first, last).map((l) => h(`div.${l.stream}`, {}, l.line)));
    }
    const total = (n + dropped).toLocaleString("en");
    this.count.textContent = dropped ? `${total} lines, the last ${n.toLocaleString("en")} held` : `${total} lines`;
  }
}
