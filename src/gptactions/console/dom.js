// Small DOM helpers shared by the console's modules.

export const $ = (id) => document.getElementById(id);

/**
 * `path` on the server that served this page, under the prefix a proxy may serve it at: the
 * page is its base + "/", so "/openapi.json" is "/gpt/openapi.json" when the page is "/gpt/".
 */
export const here = (path = "") => new URL(".", location.href).href.replace(/\/$/, "") + path;

/** Create an element: h("button", {class: "x", onclick: fn}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Text with `code spans` (as in OpenAPI descriptions) as nodes: backticks become <code>. */
export function withCode(text) {
  return String(text ?? "").split(/`([^`]+)`/).map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

/** A path or URL as nodes that may wrap after its slashes (and before `?` and `&`) only, never
 * inside a segment as `word-break: break-all` would ("conversatio/ns"). */
export function breakAfterSlashes(text) {
  return String(text).split(/(?<=\/)|(?=[?&])/).flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}

let toastTimer;
/** A short confirmation ("Copied") that screen readers also hear. */
export function toast(message) {
  const el = $("toast");
  el.textContent = message;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 1800);
}

/** Copy text; falls back to a hidden textarea where the Clipboard API is not allowed. */
export async function copyText(text, what = "Text") {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { class: "offscreen", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast(`${what} copied`);
}

/** Offer `text` as a file download. */
export function download(text, filename, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * Wire a WAI-ARIA tab list: click or arrow keys switch panels. `onShow(tab)` runs when a
 * tab becomes active. Returns a function that selects a tab by id.
 */
export function tabs(listEl, onShow = () => {}) {
  const all = [...listEl.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = false) => {
    for (const t of all) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    onShow(tab);
  };
  listEl.addEventListener("click", (e) => {
    const tab = e.target.closest('[role="tab"]');
    if (tab) select(tab);
  });
  listEl.addEventListener("keydown", (e) => {
    const i = all.indexOf(document.activeElement);
    if (i === -1) return;
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    select(all[(next + all.length) % all.length], true);
  });
  return (id) => select($(id));
}

/** Relative time such as "3 min ago", for the history list. */
export function timeAgo(iso) {
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}
