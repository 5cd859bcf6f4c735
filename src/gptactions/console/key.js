// The API key field: kept in the tab's sessionStorage by default, in localStorage only when
// "remember" is ticked. A key pasted as "Bearer gpta_…" loses its "Bearer " (the console adds
// it), and a key holding a character no key has is said so at once, not as a failed request.

import { $, toast } from "./dom.js";

const KEY_SLOT = "gptactions.apiKey";
export const KEY_NOTE = "Kept for this tab only unless “remember” is ticked.";
const BEARER = /^\s*bearer\s+(\S[\s\S]*)$/i;

/** Why `key` is not one the server could accept ("" when it may be): keys are printable ASCII. */
export function keyProblem(key) {
  const chars = [...key];
  const at = chars.findIndex((c) => c.codePointAt(0) < 0x21 || c.codePointAt(0) > 0x7e);
  if (at === -1) return "";
  const c = chars[at];
  const code = `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
  const why = c.codePointAt(0) > 0xff ? "a browser cannot send in a header" : "no key has";
  return `The key holds “${c}” (${code}, character ${at + 1}), which ${why}: keys are plain ASCII (gpta_…). Paste it again.`;
}

/** Wire the key field; `changed()` runs (debounced) once the key in use has changed. */
export function initKey(app, changed) {
  const field = $("api-key");
  const note = $("key-note");
  const box = field.closest(".field");

  /** The note under the field; `attention` marks the field as where the fix is. */
  function say(text, attention = false) {
    note.textContent = text || KEY_NOTE;
    box.classList.toggle("attention", attention);
  }

  function load() {
    const remembered = app.store.get(localStorage, KEY_SLOT);
    field.value = remembered || app.store.get(sessionStorage, KEY_SLOT) || "";
    $("key-remember").checked = Boolean(remembered);
  }

  function save() {
    const key = app.key();
    const [keep, drop] = $("key-remember").checked ? [localStorage, sessionStorage] : [sessionStorage, localStorage];
    app.store.del(drop, KEY_SLOT);
    if (!key) app.store.del(keep, KEY_SLOT);
    else if (!app.store.set(keep, KEY_SLOT, key)) say("The browser refused to store the key (its storage for this page is full or switched off): paste it again after a reload.", true);
  }

  function forget() {
    app.store.del(localStorage, KEY_SLOT);
    app.store.del(sessionStorage, KEY_SLOT);
    field.value = "";
    $("key-remember").checked = false;
    save();
    app.forgetUser(); // what the console kept of the key's user goes with it
    say("Key forgotten; this browser's history, conversation, drafts and log filters are cleared.");
    changed();
    field.focus();
  }

  let timer;
  field.addEventListener("input", () => {
    const bearer = field.value.match(BEARER);
    if (bearer) field.value = bearer[1];
    const problem = keyProblem(app.key());
    say(problem || (bearer ? "“Bearer ” taken out: the console sends “Authorization: Bearer <key>” itself." : ""), Boolean(problem));
    save();
    clearTimeout(timer);
    timer = setTimeout(changed, 400);
  });
  // Enter does what a form's submit would: the key is taken at once, and the next step (Send)
  // has the focus. Ctrl+Enter is left to the page, which sends.
  field.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.ctrlKey || e.metaKey || e.isComposing) return;
    e.preventDefault();
    clearTimeout(timer);
    changed();
    if (keyProblem(app.key())) return; // said under the field, which keeps the focus for the fix
    toast(app.key() ? "Key applied" : "No key: requests go without one");
    $("send").focus();
  });
  $("key-remember").addEventListener("change", save);
  $("key-forget").addEventListener("click", forget);
  $("key-reveal").addEventListener("click", (e) => {
    const show = field.type === "password";
    field.type = show ? "text" : "password";
    e.currentTarget.textContent = show ? "Hide" : "Show";
    e.currentTarget.setAttribute("aria-pressed", String(show));
  });
  load();
  return { save, say, problem: () => keyProblem(app.key()) };
}
