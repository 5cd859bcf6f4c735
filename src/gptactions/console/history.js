// The history of requests sent from this browser, in localStorage. Bounded so that it can never
// fill the storage the remembered key and the endpoint are kept in: at most HISTORY_MAX entries,
// a payload kept only up to PAYLOAD_MAX characters (a larger one is listed without it), and
// TOTAL_MAX characters in all, the oldest entries going first. When the browser refuses to store
// it all the same (its storage is full), the History tab says so. The requests (their messages)
// are the user's: "Forget" (the key) and "Sign out" clear them with the rest the console keeps
// of the user (app.forgetUser in console.js).

import { $, h, timeAgo, toast } from "./dom.js";
import { formatBytes } from "./format.js";

export const HISTORY_SLOT = "gptactions.history";
const HISTORY_MAX = 50;
export const PAYLOAD_MAX = 16 * 1024;
const TOTAL_MAX = 256 * 1024;

const bytes = (text) => new TextEncoder().encode(text).length;

/** An entry as it is kept: its payload left out when it is larger than PAYLOAD_MAX. */
function bounded(entry) {
  if (!entry.payload || entry.payload.length <= PAYLOAD_MAX) return entry;
  return { ...entry, payload: "", payloadOmitted: bytes(entry.payload) };
}

export function initHistory(app) {
  let entries = [];
  let stored = "";
  try {
    stored = localStorage.getItem(HISTORY_SLOT) || "";
    entries = JSON.parse(stored || "[]").map(bounded);
  } catch {
    entries = [];
  }

  function note(text) {
    $("history-note").textContent = text;
    $("history-note").hidden = !text;
  }

  /** Store the entries that fit; false when the browser would store none of them. */
  function save() {
    let text = JSON.stringify(entries);
    while (text.length > TOTAL_MAX && entries.length > 1) {
      entries.pop();
      text = JSON.stringify(entries);
    }
    for (let keep = entries.length; keep > 0; keep = Math.floor(keep / 2)) {
      try {
        localStorage.setItem(HISTORY_SLOT, JSON.stringify(entries.slice(0, keep)));
        note(keep === entries.length ? "" : `This browser's storage for the page is full: only the latest ${keep} requests are kept for the next visit.`);
        return true;
      } catch {
        /* full: try with fewer */
      }
    }
    if (!entries.length) {
      app.store.del(localStorage, HISTORY_SLOT);
      note("");
      return true;
    }
    note("This browser's storage for the page is full (or switched off): the history is not kept for the next visit.");
    toast("History not saved: the browser's storage is full");
    return false;
  }

  function preview(entry) {
    if (entry.payloadOmitted) return `(payload of ${formatBytes(entry.payloadOmitted)} not kept)`;
    try {
      const body = JSON.parse(entry.payload || "null");
      const text = body && (body.message || body.action || "");
      return typeof text === "string" ? text.slice(0, 90) : "";
    } catch {
      return "";
    }
  }

  function render() {
    $("history-count").textContent = entries.length ? String(entries.length) : "";
    const list = $("history-list");
    if (!entries.length) {
      list.replaceChildren(h("li", { class: "empty muted" }, "Nothing sent yet. Requests you send appear here."));
      return;
    }
    list.replaceChildren(
      ...entries.map((entry) =>
        h("li", {},
          h("button", { type: "button", class: "history-item", onclick: () => app.restore(entry),
            "aria-label": `Open again: ${entry.method} ${entry.path}, status ${entry.status || "none"}, ${timeAgo(entry.at)}` },
            h("span", { class: `method m-${entry.method.toLowerCase()}` }, entry.method),
            h("span", { class: "path" }, entry.path, preview(entry) ? h("span", { class: "muted preview" }, ` ${preview(entry)}`) : null),
            h("span", { class: `pill s${String(entry.status)[0]}` }, entry.status ? String(entry.status) : "—"),
            h("span", { class: "muted nowrap" }, `${entry.ms} ms · ${timeAgo(entry.at)}`),
          ),
        ),
      ),
    );
  }

  /** Drop every entry, on the page and in storage. */
  function clear() {
    entries = [];
    save();
    render();
  }

  $("history-clear").addEventListener("click", clear);
  if (stored.length > TOTAL_MAX) save(); // kept by an older console, payloads and all
  render();
  return {
    add(entry) {
      entries.unshift(bounded({ id: `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`, ...entry }));
      entries = entries.slice(0, HISTORY_MAX);
      save();
      render();
    },
    /** Give up the stored history (the list stays on screen), so something else fits. */
    free() {
      try {
        if (localStorage.getItem(HISTORY_SLOT) === null) return false;
        localStorage.removeItem(HISTORY_SLOT);
        note("The history was dropped from storage to make room for the key and the endpoint.");
        return true;
      } catch {
        return false;
      }
    },
    clear,
    entries: () => entries,
  };
}
