// The action picker shown for POST …/actions: choosing an action prefills a payload the server
// will accept. The actions and their parameter schemas come from the document (the body's
// `oneOf`, one variant per action), so the picker costs no request; only a document without
// them (another server's) sends for the server's catalogue (GET on the same path), with the key.

import { $, h } from "./dom.js";
import { deref, exampleFor, requestSchema } from "./openapi.js";
import { sendRequest } from "./transport.js";

const isActions = (op) => op && op.method === "post" && /\/actions$/.test(op.path);

/** The actions the document describes for `op`: [{name, description, parameters}] from the
 * variants of its body's oneOf, each fixing `action` to its name. */
export function documentedActions(doc, op) {
  const body = deref(doc, requestSchema(doc, op)) || {};
  const list = [];
  for (const option of Array.isArray(body.oneOf) ? body.oneOf : []) {
    const variant = deref(doc, option) || {};
    const props = variant.properties || {};
    const action = deref(doc, props.action) || {};
    const name = action.const ?? (Array.isArray(action.enum) && action.enum.length === 1 ? action.enum[0] : undefined);
    if (typeof name === "string") list.push({ name, description: variant.description || "", parameters: props.parameters || {} });
  }
  return list;
}

export function initActionPicker(app) {
  const cache = new Map(); // "server key" -> {list of actions, or null when unavailable; why}
  let shown = null; // {op, list} while the picker is on screen

  async function catalogue(op) {
    const documented = documentedActions(app.doc, op);
    if (documented.length) return { list: documented, why: "" };
    if (!app.key()) return { list: null, why: "" };
    const url = app.serverUrl().replace(/\/$/, "") + op.path;
    const slot = `${url} ${app.key()}`;
    if (!cache.has(slot)) {
      const result = await sendRequest({ url, method: "GET", headers: { ...app.authHeaders(), Accept: "application/json" } });
      const list = result.status === 200 && result.json && Array.isArray(result.json.actions) ? result.json.actions : null;
      const why = list ? "" : result.networkError ? "the server did not answer" : `it answered ${result.status}`;
      cache.set(slot, { list, why });
    }
    return cache.get(slot);
  }

  /** Say why there is no picker for POST …/actions (no key, or the list did not load). */
  function note(text) {
    $("action-note").textContent = text;
    $("action-note").hidden = !text;
  }

  function apply(op, action) {
    app.patchPayload(op, { action: action.name, parameters: exampleFor(app.doc, action.parameters || {}) });
    $("action-help").textContent = action.description || "";
  }

  /** Show the picker when the current endpoint is POST …/actions and the catalogue loads. */
  async function refresh() {
    const op = app.op;
    const box = $("action-picker");
    shown = null;
    if (!isActions(op)) {
      box.hidden = true;
      note("");
      return;
    }
    const { list, why } = await catalogue(op);
    if (app.op !== op) return;
    if (!list || !list.length) {
      box.hidden = true;
      note(list ? "The server lists no actions."
        : why ? `The list of actions could not be read (GET ${op.path}: ${why}); check the API key.`
        : "Paste an API key at the top to choose an action from the server's list, with its parameters filled in.");
      return;
    }
    note("");
    const select = $("action-pick");
    select.replaceChildren(...list.map((a) => h("option", { value: a.name }, a.name)));
    let current;
    try {
      current = JSON.parse($("payload").value);
    } catch {
      current = undefined;
    }
    select.value = "";
    $("action-help").textContent = "";
    box.hidden = false;
    shown = { op, list };
    // Untouched payloads get the chosen action's example parameters; edits are kept, and the
    // picker shows the action they name.
    if (!app.drafts.has(op.key) || !app.touched.has(op.key)) apply(op, list.find((a) => a.name === current?.action) || list[0]);
    else sync(current);
    select.onchange = () => {
      const action = list.find((a) => a.name === select.value);
      if (action) apply(op, action);
    };
  }

  /** Keep the picker on the payload's `action` as it is edited: it shows what will be sent. */
  function sync(payload) {
    if (!shown || shown.op !== app.op || !payload || typeof payload !== "object") return;
    const action = shown.list.find((a) => a.name === payload.action);
    $("action-pick").value = action ? action.name : "";
    $("action-help").textContent = action
      ? action.description || ""
      : `${JSON.stringify(payload.action ?? null)} is not in the server's list of actions.`;
  }

  return { refresh, sync };
}
