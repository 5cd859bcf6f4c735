// The action picker shown for POST …/actions: the document only says `parameters` is an
// object, so the server's own catalogue (GET on the same path) supplies each action's
// parameter schema, and choosing an action prefills a payload the server will accept.

import { $, h } from "./dom.js";
import { exampleFor } from "./openapi.js";
import { sendRequest } from "./transport.js";

const isActions = (op) => op && op.method === "post" && /\/actions$/.test(op.path);

export function initActionPicker(app) {
  const cache = new Map(); // "server key" -> list of actions, or null when unavailable

  async function catalogue(op) {
    const url = app.serverUrl().replace(/\/$/, "") + op.path;
    const slot = `${url} ${app.key()}`;
    if (!cache.has(slot)) {
      const result = await sendRequest({ url, method: "GET", headers: { ...app.authHeaders(), Accept: "application/json" } });
      const list = result.status === 200 && result.json && Array.isArray(result.json.actions) ? result.json.actions : null;
      cache.set(slot, list);
    }
    return cache.get(slot);
  }

  function apply(op, action) {
    app.patchPayload(op, { action: action.name, parameters: exampleFor(app.doc, action.parameters || {}) });
    $("action-help").textContent = action.description || "";
  }

  /** Show the picker when the current endpoint is POST …/actions and the catalogue loads. */
  async function refresh() {
    const op = app.op;
    const box = $("action-picker");
    if (!isActions(op) || !app.key()) {
      box.hidden = true;
      return;
    }
    const list = await catalogue(op);
    if (app.op !== op || !list || !list.length) {
      box.hidden = !(app.op === op && list && list.length);
      return;
    }
    const select = $("action-pick");
    select.replaceChildren(...list.map((a) => h("option", { value: a.name }, a.name)));
    let current;
    try {
      current = JSON.parse($("payload").value).action;
    } catch {
      current = undefined;
    }
    const chosen = list.find((a) => a.name === current) || list[0];
    select.value = chosen.name;
    box.hidden = false;
    // Untouched payloads get the chosen action's example parameters; edits are kept.
    if (!app.drafts.has(op.key) || !app.touched.has(op.key)) apply(op, chosen);
    else $("action-help").textContent = chosen.description || "";
    select.onchange = () => {
      const action = list.find((a) => a.name === select.value);
      if (action) apply(op, action);
    };
  }

  return { refresh };
}
