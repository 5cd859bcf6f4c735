// The console's entry point: loads the served OpenAPI document, builds the request form from
// it, sends requests and shows their answers. The other modules hold the panels; they all
// share the `app` object defined here.

import { initActionPicker } from "./actions.js";
import { createConversation, isRespond, isStart } from "./conversation.js";
import { $, copyText, h, here, tabs, toast, withCode } from "./dom.js";
import { paramField, readParams, writeParams } from "./fields.js";
import { formatBytes, parseJsonWithPosition } from "./format.js";
import { HISTORY_SLOT, initHistory } from "./history.js";
import { initKey } from "./key.js";
import { initLogs } from "./logs.js";
import { deref, exampleFor, listOperations, requestSchema, validate } from "./openapi.js";
import { initOperationDoc } from "./operation-doc.js";
import { renderReadiness } from "./readiness.js";
import { initResponse } from "./response.js";
import { initSchemaPanel } from "./schema-panel.js";
import { initServer } from "./server.js";
import { initSession } from "./session.js";
import { initSignIn } from "./signin.js";
import { buildSnippets, CANCELLED, sendRequest, streamedText } from "./transport.js";
import { initUsage } from "./usage.js";

const ENDPOINT_SLOT = "gptactions.endpoint";
const NO_BODY = new Set(["GET", "HEAD"]);

// Storage can be switched off (private modes, policies) or full: the console must keep working,
// and the key and the endpoint come before the history, which gives up its room for them.
const store = {
  get: (area, k) => { try { return area.getItem(k); } catch { return null; } },
  set: (area, k, v) => {
    try {
      area.setItem(k, v);
      return true;
    } catch {
      if (area !== localStorage || k === HISTORY_SLOT || !app.history || !app.history.free()) return false;
      try {
        area.setItem(k, v);
        return true;
      } catch {
        return false;
      }
    }
  },
  del: (area, k) => { try { area.removeItem(k); } catch { /* ignore */ } },
};

const app = {
  doc: null,
  ops: [],
  op: null,
  drafts: new Map(), // operation key -> payload text (example, patched or edited)
  touched: new Set(), // operation keys whose payload the user has typed in
  paramValues: new Map(), // operation key -> parameter values
  busy: null, // AbortController of the request in flight
  docMode: null, // the view of the document loaded: "key", or "oauth" for a signed-in user's token
  store,
  serverUrl: () => $("server").value || here(),
  key: () => $("api-key").value.trim(),
  authHeaders: () => (app.key() ? { Authorization: `Bearer ${app.key()}` } : {}),
};
window.gptConsole = app; // handy from the devtools console, and for the browser tests

// ---- The key in use: an API key, or a signed-in user's OAuth access token ----

// A signed-in user's token calls the API as that user: the document's `auth=oauth` view says so
// (userId optional in the bodies), and the payloads and their checks follow it.
const docModeFor = () => (app.key().startsWith("gpto_") ? "oauth" : "key");

function keyChanged() {
  updateSnippets();
  if (!app.doc) return app.loaded || Promise.resolve(); // the first load reads the key it finds
  if (docModeFor() !== app.docMode) return loadDocument();
  renderReadiness(app);
  app.actionPicker.refresh();
  return Promise.resolve();
}

/** Use `value` (a key or an OAuth access token) for every request from now on. */
app.setKey = async (value) => {
  $("api-key").value = value;
  app.keyField.save();
  await keyChanged();
};

/**
 * The user is leaving (Forget, Sign out): on a shared browser the next person must not find
 * their data. Gone, on the page and in storage: the history of requests (localStorage), the
 * conversation, the payloads and parameters typed in (the tab's session), and the logs filters
 * and rows. Kept, being nobody's: the endpoint chosen, the server, the console's OAuth client ID.
 */
app.forgetUser = () => {
  app.history.clear();
  app.conversation.clear();
  app.drafts.clear();
  app.touched.clear();
  app.paramValues.clear();
  if (app.op) {
    renderParams();
    renderPayload();
    updatePayloadUi();
    app.actionPicker.refresh();
  }
  app.logs.clear();
  app.session.write();
};

// ---- Servers and endpoints, from the document ----

function fillServers(doc) {
  const origin = here();
  const chosen = $("server").value;
  const entries = [{ url: origin, label: `This server — ${origin}` }];
  for (const server of doc.servers || []) {
    let url = String(server.url || "");
    for (const [name, v] of Object.entries(server.variables || {})) url = url.replaceAll(`{${name}}`, v.default ?? "");
    try {
      url = new URL(url, origin).href.replace(/\/$/, "");
    } catch {
      continue;
    }
    const label = server.description ? `${server.description} — ${url}` : url;
    if (url === origin) entries[0].label = label;
    else if (!entries.some((e) => e.url === url)) entries.push({ url, label });
  }
  $("server").replaceChildren(...entries.map((e) => h("option", { value: e.url }, e.label)));
  $("server").value = entries.some((e) => e.url === chosen) ? chosen : origin;
}

function fillEndpoints() {
  $("endpoint").replaceChildren(
    ...app.ops.map((op) => h("option", { value: op.key }, `${op.method.toUpperCase()} ${op.path}${op.summary ? ` — ${op.summary}` : ""}`)),
  );
}

/** Make `key` ("post /api/v1/gpt/respond") the current endpoint. */
app.selectOperation = (key, { focus = false } = {}) => {
  if (!app.ops.some((op) => op.key === key)) return false;
  $("endpoint").value = key;
  onEndpointChange();
  if (focus) {
    $("request-panel").scrollIntoView({ behavior: "smooth", block: "start" });
    $("endpoint").focus({ preventScroll: true });
  }
  return true;
};

// ---- Deep links: #/operationId names the chosen operation (Swagger UI's #/tag/operationId too) ----

let linkOps = false; // false until start-up has chosen the first operation: that one replaces

/** The key of the operation the URL's hash names, or null. */
function linkedOperation() {
  const m = location.hash.match(/^#\/(?:[^/]*\/)?([^/]+)$/);
  if (!m) return null;
  let id;
  try {
    id = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  const op = app.ops.find((o) => o.operationId === id);
  return op ? op.key : null;
}

/** Put the chosen operation in the URL: a new history entry, so Back returns to the last one. */
function linkOperation(op) {
  if (!op.operationId) return;
  const hash = `#/${encodeURIComponent(op.operationId)}`;
  if (location.hash === hash) return;
  history[linkOps ? "pushState" : "replaceState"](null, "", hash);
}

function followLink() {
  const key = linkedOperation();
  if (key && (!app.op || key !== app.op.key)) app.selectOperation(key);
}

/**
 * Another method on the same path is another operation (its own payload, schema, responses
 * and check), so the method menu picks it: the page never sends one method while showing
 * another's operation.
 */
function onMethodChange() {
  const key = `${$("method").value.toLowerCase()} ${app.op.path}`;
  if (!app.selectOperation(key)) $("method").value = app.op.method.toUpperCase();
}

function onEndpointChange() {
  if (app.op) saveParams();
  const op = app.ops.find((o) => o.key === $("endpoint").value) || app.ops[0];
  app.op = op;
  if (!op) return;
  store.set(localStorage, ENDPOINT_SLOT, op.key);
  linkOperation(op);
  // Only the methods the document has for this path (an undocumented one can only get a 405),
  // each standing for its operation: choosing one switches the endpoint to it.
  const documented = op.documentedMethods.map((m) => m.toUpperCase());
  $("method").replaceChildren(...documented.map((m) => h("option", { value: m }, m)));
  $("method").value = op.method.toUpperCase();
  $("method-help").textContent = documented.length > 1
    ? `${op.path} has ${documented.length} operations (${documented.join(", ")}): changing the method switches to that one.`
    : "";
  const text = op.operation.description && op.operation.description !== op.summary ? op.operation.description : op.summary;
  $("endpoint-help").replaceChildren(...withCode(text), op.operationId ? h("code", { class: "opid" }, op.operationId) : "");
  renderParams();
  renderPayload();
  app.operationDoc.render(op);
  app.response.follow(op);
  updatePayloadUi();
  app.conversation.renderOffer();
  app.schemaPanel.markCurrent(op.key);
  app.actionPicker.refresh();
  app.session.save();
}

function renderParams() {
  const params = app.op.parameters.filter((p) => ["query", "path", "header"].includes(p.in));
  const box = $("params-fields");
  box.replaceChildren(...params.map((p) => paramField(app.doc, p, "param")));
  writeParams(box, app.paramValues.get(app.op.key));
  $("params").hidden = params.length === 0;
  $("params").querySelector("legend").textContent = params.every((p) => p.in === "query") ? "Query parameters" : "Parameters";
}

const saveParams = () => app.op && app.paramValues.set(app.op.key, readParams($("params-fields")).values);

// ---- The payload editor ----

function exampleText(op) {
  const schema = requestSchema(app.doc, op);
  if (!schema) return "";
  const value = exampleFor(app.doc, schema);
  const conv = app.conversation.state;
  if (isRespond(op) && conv.id && value && typeof value === "object") {
    value.conversationId = conv.id;
    if (conv.userId) value.userId = conv.userId;
  }
  return JSON.stringify(value, null, 2);
}

function renderPayload(reset = false) {
  if (reset) {
    app.drafts.delete(app.op.key);
    app.touched.delete(app.op.key);
  }
  $("payload").value = app.drafts.get(app.op.key) ?? exampleText(app.op);
  checkPayload();
}

/** Set fields of `op`'s payload (undefined removes one), keeping the rest of the user's edits. */
app.patchPayload = (op, fields) => {
  const current = app.drafts.get(op.key) ?? exampleText(op);
  const parsed = parseJsonWithPosition(current || "{}").value;
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) delete parsed[k];
    else parsed[k] = v;
  }
  const text = JSON.stringify(parsed, null, 2);
  app.drafts.set(op.key, text);
  if (app.op && app.op.key === op.key) {
    $("payload").value = text;
    checkPayload();
  }
};

/** The payload as text and value, with its syntax error or schema warning; no side effects. */
function readPayload() {
  const editor = $("payload");
  const text = editor.value;
  const out = { ok: true, value: undefined, text: text.trim() ? text : "", error: "", warning: "" };
  if (editor.disabled || !text.trim()) return out;
  const parsed = parseJsonWithPosition(text);
  if (parsed.error) return { ...out, ok: false, error: `JSON syntax error — ${parsed.error}` };
  out.value = parsed.value;
  const schema = requestSchema(app.doc, app.op);
  const problems = schema ? validate(app.doc, schema, parsed.value) : [];
  if (problems.length) {
    out.warning = `Not what the document asks for: ${problems.slice(0, 3).map((p) => `${p.pointer} ${p.message}`).join("; ")}. You can still send it.`;
  }
  return out;
}

/** Inline syntax check (blocks Send) and schema check (a warning only: 400s are worth seeing). */
function checkPayload() {
  const payload = readPayload();
  $("payload-error").textContent = payload.error;
  $("payload").setAttribute("aria-invalid", String(!payload.ok));
  $("payload-field").classList.toggle("invalid", !payload.ok);
  $("payload-help").textContent = payload.warning || app.payloadNote || "";
  app.actionPicker.sync(payload.value);
  if (bodyStreams(app.op)) $("stream").checked = Boolean(payload.value && payload.value.stream === true);
  updateSnippets();
  return payload;
}

/** Whether `op` streams when its body says `"stream": true` (OpenAI's form) rather than by Accept. */
function bodyStreams(op) {
  if (op.bodyStreams === undefined) {
    const schema = deref(app.doc, requestSchema(app.doc, op));
    const stream = schema && schema.properties ? deref(app.doc, schema.properties.stream) : null;
    op.bodyStreams = Boolean(stream && [stream.type].flat().includes("boolean"));
  }
  return op.bodyStreams;
}

function updatePayloadUi() {
  const op = app.op;
  const method = op.method.toUpperCase();
  const hasSchema = Boolean(requestSchema(app.doc, op));
  // An operation that documents no request body gets no editor, whatever its method (DELETE).
  const documented = Boolean(op.operation.requestBody);
  const editor = $("payload");
  $("payload-field").hidden = !documented;
  editor.disabled = NO_BODY.has(method) || !documented;
  app.payloadNote = NO_BODY.has(method) ? `${method} requests carry no payload; this one is not sent.`
    : hasSchema ? "" : "The document gives this payload no schema: it is sent as typed.";
  const streamable = method === "POST" && (isStart(op) || isRespond(op) || bodyStreams(op));
  $("stream-option").hidden = !streamable;
  checkPayload();
}

// ---- Building and sending the request ----

function currentRequest() {
  const op = app.op;
  const method = op.method.toUpperCase(); // the method menu only ever picks the operation
  const params = readParams($("params-fields"));
  let path = op.path;
  for (const [name, value] of Object.entries(params.path)) path = path.replace(`{${name}}`, encodeURIComponent(value));
  const baseUrl = app.serverUrl().replace(/\/$/, "") + path;
  const qs = new URLSearchParams(params.query).toString();
  const headers = { ...app.authHeaders(), ...params.header };
  const payload = NO_BODY.has(method) ? { ok: true, text: "" } : readPayload();
  if (payload.text) headers["Content-Type"] = "application/json";
  const stream = bodyStreams(op)
    ? Boolean(payload.value && payload.value.stream === true)
    : !$("stream-option").hidden && $("stream").checked;
  headers.Accept = stream ? "text/event-stream" : "application/json";
  return { op, method, url: qs ? `${baseUrl}?${qs}` : baseUrl, baseUrl, query: params.query, params: params.values, headers, payload, stream };
}

function updateSnippets() {
  if (!app.op) return;
  const req = currentRequest();
  const headers = { ...req.headers };
  if (!req.stream) delete headers.Accept; // the default answer is JSON: keep snippets short
  const snippets = buildSnippets({
    url: req.url, baseUrl: req.baseUrl, query: req.query, method: req.method, headers,
    bodyText: req.payload.text, bodyValue: req.payload.value, key: app.key(), reveal: $("snippet-reveal").checked,
  });
  const lang = document.querySelector("#snippets [aria-pressed='true']").dataset.lang;
  $("snippet-code").textContent = snippets[lang];
  app.snippets = snippets;
}

/** What a DELETE is about to erase, asked before it goes: it cannot be undone. */
function deleteQuestion(req) {
  const named = Object.entries(req.params)
    .filter(([, value]) => String(value).trim())
    .map(([where, value]) => `${where.split(":")[1]} “${String(value).trim()}”`);
  const target = named.length ? ` for ${named.join(", ")}` : " for the key's own user";
  const what = req.op.operation.description || req.op.summary || "";
  return `Send DELETE ${req.op.path}${target} to ${app.serverUrl()}?\n\n${what ? `${what}\n` : ""}This cannot be undone.`;
}

async function send() {
  if (!app.op || app.busy) return;
  const req = currentRequest();
  const keyProblem = app.keyField.problem();
  if (keyProblem) {
    app.keyField.say(keyProblem, true);
    app.response.notSent(`Not sent: ${keyProblem}`, $("api-key"));
    return;
  }
  const missing = [...req.url.matchAll(/\{([^}/]+)\}/g)].map((m) => m[1]);
  if (missing.length) {
    const field = $("params-fields").querySelector(`[data-in="path"][data-name="${CSS.escape(missing[0])}"]`);
    app.response.notSent(`Fill in the path parameter ${missing.join(", ")} first: it is part of the URL.`, field);
    return;
  }
  if (!req.payload.ok) {
    checkPayload();
    app.response.notSent("Fix the JSON syntax error in the Request Payload first.", $("payload"));
    return;
  }
  if (req.method === "DELETE" && !confirm(deleteQuestion(req))) {
    app.response.notSent("Not sent: the DELETE was not confirmed.", $("send"));
    return;
  }
  const controller = new AbortController();
  app.busy = controller;
  app.response.busy(true);
  app.response.reveal(); // the answer shows where the user can see it, without moving the focus
  const bodyValue = req.payload.value;
  app.conversation.begin(req.method === "POST" ? req.op : null, bodyValue);
  let streamed = "";
  let tokens = 0;
  const result = await sendRequest({
    url: req.url, method: req.method, headers: req.headers, body: req.payload.text || undefined, signal: controller.signal,
    onEvent: (ev) => {
      const text = streamedText(ev);
      if (!text) return;
      streamed += text;
      tokens += 1;
      app.response.progress(tokens);
      app.conversation.token(text);
      $("body-pretty").textContent = streamed;
    },
  });
  app.busy = null;
  app.response.busy(false);
  const cancelled = Boolean(result.cancelled || result.networkError === CANCELLED);
  app.response.show(req, result, streamed);
  const done = result.events.length ? result.events.find((e) => e.event === "done") : null;
  const data = done ? done.data : result.json;
  app.conversation.finish(req.method === "POST" ? req.op : null, bodyValue, result.status, data, cancelled);
  app.response.markShown();
  app.session.save();
  app.history.add({
    at: new Date().toISOString(), server: app.serverUrl(), opKey: req.op.key, method: req.method, path: req.op.path,
    params: req.params, payload: req.payload.text, status: (!result.cancelled && result.status) || 0, ms: Math.round(result.ms), stream: req.stream,
  });
}

// ---- Start-up ----

/** Load the document (again when the key in use becomes, or stops being, a user's token). */
async function loadDocument() {
  const status = $("doc-status");
  const mode = docModeFor();
  const first = !app.doc;
  let doc;
  try {
    const response = await fetch(here(mode === "oauth" ? "/openapi.json?auth=oauth" : "/openapi.json"), { cache: "no-store" });
    if (!response.ok) throw new Error(`GET openapi.json answered ${response.status}`);
    doc = await response.json();
  } catch (err) {
    status.className = "doc-status error";
    status.replaceChildren(
      `Could not load the OpenAPI document (${err.message}). `,
      h("button", { type: "button", class: "link", onclick: () => loadDocument() }, "Try again"),
    );
    return;
  }
  if (mode !== docModeFor()) return loadDocument(); // the key changed while it loaded
  app.doc = doc;
  app.docMode = mode;
  app.ops = listOperations(app.doc);
  const info = app.doc.info || {};
  status.className = "doc-status";
  status.replaceChildren(
    // info.version is the API's (the seed's); x-server-version is this server's release.
    h("strong", {}, info.title || "API"),
    ` ${info.version ? `API v${info.version}` : ""}${info["x-server-version"] ? ` · server ${info["x-server-version"]}` : ""}`,
    ` · OpenAPI ${app.doc.openapi || "?"} · ${app.ops.length} operations${mode === "oauth" ? " · as the signed-in user" : ""}`,
    h("span", { id: "readiness-chip" }),
  );
  fillServers(app.doc);
  fillEndpoints();
  // Payloads nobody typed in were examples of the other view (with or without userId).
  for (const key of [...app.drafts.keys()]) if (!app.touched.has(key)) app.drafts.delete(key);
  const current = first ? app.session.restore() : app.op && app.op.key;
  const saved = (first && linkedOperation()) || current || store.get(localStorage, ENDPOINT_SLOT);
  if (!app.selectOperation(saved) && app.ops.length) app.selectOperation(app.ops[0].key);
  linkOps = true;
  app.schemaPanel.render();
  if (first) {
    app.conversation.render();
    app.logs.render();
  }
  document.documentElement.dataset.doc = mode;
  document.documentElement.dataset.ready = "true"; // lets the browser tests wait for start-up
}

function wire() {
  $("api-key").addEventListener("input", updateSnippets);
  $("server").addEventListener("change", updateSnippets);
  $("endpoint").addEventListener("change", onEndpointChange);
  addEventListener("popstate", followLink); // Back and Forward, and a hash typed in
  addEventListener("hashchange", followLink);
  $("method").addEventListener("change", onMethodChange);
  $("params-fields").addEventListener("input", () => {
    saveParams();
    updateSnippets();
    app.session.save();
  });
  $("payload").addEventListener("input", () => {
    app.drafts.set(app.op.key, $("payload").value);
    app.touched.add(app.op.key);
    checkPayload();
    app.session.save();
  });
  $("payload-format").addEventListener("click", () => {
    const parsed = parseJsonWithPosition($("payload").value);
    if (parsed.error) return checkPayload();
    $("payload").value = JSON.stringify(parsed.value, null, 2);
    app.drafts.set(app.op.key, $("payload").value);
    checkPayload();
  });
  $("payload-example").addEventListener("click", () => {
    renderPayload(true);
    app.actionPicker.refresh();
  });
  $("stream").addEventListener("change", () => {
    if (bodyStreams(app.op)) { // the body says whether to stream: the box writes it there
      app.touched.add(app.op.key);
      app.patchPayload(app.op, { stream: $("stream").checked ? true : undefined });
      app.session.save();
    }
    updateSnippets();
  });
  $("send").addEventListener("click", send);
  $("cancel").addEventListener("click", () => app.busy && app.busy.abort());
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      send();
    } else if (e.key === "Escape" && app.busy) app.busy.abort();
  });
  if (/Mac|iPhone|iPad/.test(navigator.platform)) $("send-shortcut").textContent = "⌘ ↵";

  document.querySelectorAll("#snippets [data-lang]").forEach((b) =>
    b.addEventListener("click", () => {
      document.querySelectorAll("#snippets [data-lang]").forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
      updateSnippets();
    }),
  );
  $("snippet-reveal").addEventListener("change", updateSnippets);
  $("body-copy").addEventListener("click", () => {
    const raw = $("body-raw").textContent;
    let text = raw;
    try {
      text = JSON.stringify(JSON.parse(raw), null, 2);
    } catch {
      /* not JSON: copy it as it came */
    }
    copyText(text, "Body");
  });
  $("snippet-copy").addEventListener("click", () => copyText($("snippet-code").textContent, "Snippet"));

  tabs(document.querySelector("#response-panel [role=tablist]"));
  app.showTool = tabs(document.querySelector(".workspace [role=tablist]"), (tab) => {
    if (tab.id === "tool-server") app.serverFigures.load();
    if (tab.id === "tool-usage") app.usage.load();
  });
}

app.keyField = initKey(app, keyChanged);
app.conversation = createConversation(app);
app.response = initResponse(app);
app.session = initSession(app);
app.actionPicker = initActionPicker(app);
app.schemaPanel = initSchemaPanel(app);
app.operationDoc = initOperationDoc(app);
app.logs = initLogs(app);
app.history = initHistory(app);
app.serverFigures = initServer(app);
app.usage = initUsage(app);
app.restore = (entry) => {
  // The operation of the method that was sent (older history could hold another op's key).
  if (!app.selectOperation(`${entry.method.toLowerCase()} ${entry.path}`)) {
    toast(`${entry.method} ${entry.path} is no longer in the document.`);
    return;
  }
  if ([...$("server").options].some((o) => o.value === entry.server)) $("server").value = entry.server;
  writeParams($("params-fields"), entry.params);
  saveParams();
  if (entry.payloadOmitted) toast(`Its payload (${formatBytes(entry.payloadOmitted)}) was too large to keep: the payload shown is the current one.`);
  else if (entry.payload) {
    app.drafts.set(app.op.key, entry.payload);
    app.touched.add(app.op.key);
    $("payload").value = entry.payload;
  }
  $("stream").checked = Boolean(entry.stream);
  updatePayloadUi();
  $("request-panel").scrollIntoView({ behavior: "smooth", block: "start" });
  $("send").focus({ preventScroll: true });
};
wire();
app.loaded = loadDocument();
app.signIn = initSignIn(app);
