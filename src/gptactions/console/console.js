// The console's entry point: loads the served OpenAPI document, builds the request form from
// it, sends requests and shows their answers. The other modules hold the panels; they all
// share the `app` object defined here.

import { initActionPicker } from "./actions.js";
import { createConversation, isRespond, isStart } from "./conversation.js";
import { $, copyText, h, tabs, toast, withCode } from "./dom.js";
import { paramField, readParams, writeParams } from "./fields.js";
import { escapeHtml, formatBytes, hangIndents, highlightJson, parseJsonWithPosition } from "./format.js";
import { initHistory, initLogs } from "./logs.js";
import { exampleFor, listOperations, requestSchema, validate } from "./openapi.js";
import { initOperationDoc } from "./operation-doc.js";
import { renderReadiness } from "./readiness.js";
import { initSchemaPanel } from "./schema-panel.js";
import { initServer } from "./server.js";
import { initSignIn } from "./signin.js";
import { buildSnippets, CANCELLED, describeFailure, sendRequest } from "./transport.js";
import { initUsage } from "./usage.js";

const KEY_SLOT = "gptactions.apiKey";
const ENDPOINT_SLOT = "gptactions.endpoint";
const KEY_NOTE = "Kept for this tab only unless “remember” is ticked.";
const NO_BODY = new Set(["GET", "HEAD"]);
const REASONS = { 200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
  404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout" };

// Storage can be switched off (private modes, policies): the console must keep working.
const store = {
  get: (area, k) => { try { return area.getItem(k); } catch { return null; } },
  set: (area, k, v) => { try { area.setItem(k, v); } catch { /* ignore */ } },
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
  store,
  serverUrl: () => $("server").value || location.origin,
  key: () => $("api-key").value.trim(),
  authHeaders: () => (app.key() ? { Authorization: `Bearer ${app.key()}` } : {}),
};
window.gptConsole = app; // handy from the devtools console, and for the browser tests

// ---- API key: the tab's sessionStorage by default, localStorage only when asked ----

function loadKey() {
  const remembered = store.get(localStorage, KEY_SLOT);
  $("api-key").value = remembered || store.get(sessionStorage, KEY_SLOT) || "";
  $("key-remember").checked = Boolean(remembered);
}

function saveKey() {
  const key = app.key();
  const [keep, drop] = $("key-remember").checked ? [localStorage, sessionStorage] : [sessionStorage, localStorage];
  store.del(drop, KEY_SLOT);
  if (key) store.set(keep, KEY_SLOT, key);
  else store.del(keep, KEY_SLOT);
  updateSnippets();
}

/** Use `value` (a key or an OAuth access token) for every request from now on. */
app.setKey = (value) => {
  $("api-key").value = value;
  saveKey();
  renderReadiness(app);
  app.actionPicker.refresh();
};

function forgetKey() {
  store.del(localStorage, KEY_SLOT);
  store.del(sessionStorage, KEY_SLOT);
  $("api-key").value = "";
  $("key-remember").checked = false;
  updateSnippets();
  $("api-key").focus();
}

// ---- Servers and endpoints, from the document ----

function fillServers(doc) {
  const origin = location.origin;
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
  $("server").value = origin;
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
  updatePayloadUi();
  app.conversation.renderOffer();
  app.schemaPanel.markCurrent(op.key);
  app.actionPicker.refresh();
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
  updateSnippets();
  return payload;
}

function updatePayloadUi() {
  const op = app.op;
  const method = op.method.toUpperCase();
  const hasSchema = Boolean(requestSchema(app.doc, op));
  const editor = $("payload");
  $("payload-field").hidden = !hasSchema && NO_BODY.has(method);
  editor.disabled = NO_BODY.has(method);
  app.payloadNote = editor.disabled ? `${method} requests carry no payload; this one is not sent.` : hasSchema ? "" : "This operation documents no payload.";
  const streamable = method === "POST" && (isStart(op) || isRespond(op));
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
  const stream = !$("stream-option").hidden && $("stream").checked;
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

async function send() {
  if (!app.op || app.busy) return;
  const req = currentRequest();
  const missing = [...req.url.matchAll(/\{([^}/]+)\}/g)].map((m) => m[1]);
  if (missing.length) {
    const field = $("params-fields").querySelector(`[data-in="path"][data-name="${CSS.escape(missing[0])}"]`);
    notSent(`Fill in the path parameter ${missing.join(", ")} first: it is part of the URL.`, field);
    return;
  }
  if (!req.payload.ok) {
    checkPayload();
    notSent("Fix the JSON syntax error in the Request Payload first.", $("payload"));
    return;
  }
  const controller = new AbortController();
  app.busy = controller;
  setBusy(true);
  const bodyValue = req.payload.value;
  app.conversation.begin(req.method === "POST" ? req.op : null, bodyValue);
  let streamed = "";
  let tokens = 0;
  const result = await sendRequest({
    url: req.url, method: req.method, headers: req.headers, body: req.payload.text || undefined, signal: controller.signal,
    onEvent: (ev) => {
      if (ev.event === "token" && ev.data && typeof ev.data.text === "string") {
        streamed += ev.data.text;
        tokens += 1;
        $("response-meta").textContent = `Streaming… ${tokens} token${tokens === 1 ? "" : "s"} so far`;
        app.conversation.token(ev.data.text);
        $("body-pretty").textContent = streamed;
      }
    },
  });
  app.busy = null;
  setBusy(false);
  if (result.networkError && controller.signal.aborted) result.networkError = CANCELLED;
  showResult(req, result, streamed);
  const done = result.events.length ? result.events.find((e) => e.event === "done") : null;
  const data = done ? done.data : result.json;
  app.conversation.finish(req.method === "POST" ? req.op : null, bodyValue, result.status, data);
  markShown();
  app.history.add({
    at: new Date().toISOString(), server: app.serverUrl(), opKey: req.op.key, method: req.method, path: req.op.path,
    params: req.params, payload: req.payload.text, status: result.status || 0, ms: Math.round(result.ms), stream: req.stream,
  });
}

/** Say why the request was not sent, and clear the previous answer so it is not taken for this one's. */
function notSent(reason, field) {
  clearResponse("Not sent.");
  $("status-code").textContent = "Not sent";
  setStatusClass("none");
  $("response-meta").textContent = reason;
  if (field) field.focus();
  markShown();
}

function clearResponse(placeholder) {
  $("failure").hidden = true;
  $("schema-check").hidden = true;
  $("body-pretty").replaceChildren(h("span", { class: "placeholder" }, placeholder));
}

function setBusy(on) {
  // aria-disabled rather than disabled: a disabled button drops the keyboard focus.
  $("send").setAttribute("aria-disabled", String(on));
  $("send").textContent = on ? "Sending…" : "Send";
  $("cancel").hidden = !on;
  $("response-panel").setAttribute("aria-busy", String(on));
  if (on) {
    $("status-code").textContent = "…";
    setStatusClass("pending");
    $("response-meta").textContent = "Waiting for the answer…";
    clearResponse("Waiting for the server…");
  }
}

// Counts the answers shown, so scripts (and the browser tests) can wait for the next one.
const markShown = () => ($("response-panel").dataset.shown = String(Number($("response-panel").dataset.shown || 0) + 1));

const setStatusClass = (cls) => ($("status-code").className = `status-badge status-${cls}`);

// ---- Showing the answer ----

function showResult(req, result, streamed) {
  const statusEl = $("status-code");
  if (result.networkError) {
    const cancelled = result.networkError === CANCELLED;
    statusEl.textContent = cancelled ? "Cancelled" : "No response";
    setStatusClass(cancelled ? "none" : "error");
  } else {
    statusEl.textContent = `${result.status} ${result.statusText || REASONS[result.status] || ""}`.trim();
    setStatusClass(`${String(result.status)[0]}xx`);
  }
  const meta = [`${Math.round(result.ms)} ms`];
  if (result.size !== undefined) meta.push(formatBytes(result.size));
  if (result.events.length) meta.push(`streamed ${result.events.length} events, first byte after ${Math.round(result.firstByteMs)} ms`);
  meta.push(`${req.method} ${req.url.replace(location.origin, "")}`);
  $("response-meta").textContent = meta.join(" · ");

  // A stream can fail after its 200: its `error` event (or a broken connection) is a failure too.
  const streamError = result.events.find((e) => e.event === "error");
  const failed = result.networkError || result.status >= 400 || streamError || result.streamError;
  const failure = $("failure");
  failure.hidden = !failed;
  if (failed) {
    const f = streamError || result.streamError
      ? { ...describeFailure({ ...result, json: streamError ? streamError.data : undefined, text: result.streamError || "" }, req.method, req.url),
          title: "The stream ended with an error", hint: "The text that arrived before it is in the Body below." }
      : describeFailure(result, req.method, req.url);
    let hint = f.hint;
    if (result.status === 405) hint += ` Documented: ${req.op.documentedMethods.map((m) => m.toUpperCase()).join(", ")}.`;
    if (result.status === 401 && !app.key()) hint = "No API key was sent: paste one in the API key field at the top.";
    const parts = [
      h("p", { class: "failure-title" }, f.title, f.code ? h("code", {}, f.code) : null),
      h("p", { class: "failure-message" }, f.message),
      f.details.length ? h("ul", { class: "failure-details" }, f.details.map((d) => h("li", {}, d.pointer ? h("code", {}, d.pointer) : null, ` ${d.message || ""}`))) : null,
      hint ? h("p", { class: "failure-hint" }, hint) : null,
    ];
    failure.replaceChildren(...parts.filter(Boolean));
  }

  const pretty = $("body-pretty");
  if (result.json !== undefined) pretty.innerHTML = highlightJson(result.json);
  else if (result.events.length) {
    // The text as it was streamed, then the final event (done or error) in full; every
    // token event is in the Raw view.
    const last = result.events[result.events.length - 1];
    const counts = {};
    for (const ev of result.events) counts[ev.event] = (counts[ev.event] || 0) + 1;
    const tally = Object.entries(counts).map(([name, n]) => `${n} ${name}`).join(", ");
    pretty.innerHTML =
      `${streamed ? `<span class="streamed">${escapeHtml(streamed)}</span>` : ""}` +
      `<span class="event-note">${escapeHtml(`${result.events.length} events (${tally}); the last one, event: ${last.event}`)}</span>` +
      highlightJson(last.data);
  } else if (result.text) pretty.textContent = result.text;
  else pretty.replaceChildren(h("span", { class: "placeholder" }, result.networkError ? "No answer." : "The body is empty."));
  hangIndents(pretty);
  $("body-raw").textContent = result.text || "";
  $("body-copy").disabled = !result.text;
  // A 401 points at the key field, which is where the fix is.
  $("api-key").closest(".field").classList.toggle("attention", result.status === 401);
  $("key-note").textContent = result.status === 401
    ? (app.key() ? "The server refused this key (401): paste a valid one." : "This operation needs a key: paste it here.")
    : KEY_NOTE;
  $("headers-table").tBodies[0].replaceChildren(
    ...(result.headers || []).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v))),
  );
  app.operationDoc.showCheck(req, result);
}

// ---- Start-up ----

async function loadDocument() {
  const status = $("doc-status");
  try {
    const response = await fetch("/openapi.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /openapi.json answered ${response.status}`);
    app.doc = await response.json();
  } catch (err) {
    status.className = "doc-status error";
    status.replaceChildren(
      `Could not load the OpenAPI document (${err.message}). `,
      h("button", { type: "button", class: "link", onclick: () => loadDocument() }, "Try again"),
    );
    return;
  }
  app.ops = listOperations(app.doc);
  const info = app.doc.info || {};
  status.className = "doc-status";
  status.replaceChildren(
    // info.version is the API's (the seed's); x-server-version is this server's release.
    h("strong", {}, info.title || "API"),
    ` ${info.version ? `API v${info.version}` : ""}${info["x-server-version"] ? ` · server ${info["x-server-version"]}` : ""}`,
    ` · OpenAPI ${app.doc.openapi || "?"} · ${app.ops.length} operations`,
    h("span", { id: "readiness-chip" }),
  );
  fillServers(app.doc);
  fillEndpoints();
  const saved = store.get(localStorage, ENDPOINT_SLOT);
  if (!app.selectOperation(saved) && app.ops.length) app.selectOperation(app.ops[0].key);
  app.schemaPanel.render();
  app.logs.render();
  document.documentElement.dataset.ready = "true"; // lets the browser tests wait for start-up
}

function wire() {
  loadKey();
  let keyTimer;
  $("api-key").addEventListener("input", () => {
    saveKey();
    $("api-key").closest(".field").classList.remove("attention");
    $("key-note").textContent = KEY_NOTE;
    clearTimeout(keyTimer);
    keyTimer = setTimeout(() => {
      app.actionPicker.refresh();
      renderReadiness(app);
    }, 400);
  });
  $("key-remember").addEventListener("change", saveKey);
  $("key-forget").addEventListener("click", forgetKey);
  $("key-reveal").addEventListener("click", (e) => {
    const show = $("api-key").type === "password";
    $("api-key").type = show ? "text" : "password";
    e.currentTarget.textContent = show ? "Hide" : "Show";
    e.currentTarget.setAttribute("aria-pressed", String(show));
  });
  $("server").addEventListener("change", updateSnippets);
  $("endpoint").addEventListener("change", onEndpointChange);
  $("method").addEventListener("change", onMethodChange);
  $("params-fields").addEventListener("input", () => {
    saveParams();
    updateSnippets();
  });
  $("payload").addEventListener("input", () => {
    app.drafts.set(app.op.key, $("payload").value);
    app.touched.add(app.op.key);
    checkPayload();
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
  $("stream").addEventListener("change", updateSnippets);
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

app.conversation = createConversation(app);
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
  if (entry.payload) {
    app.drafts.set(app.op.key, entry.payload);
    $("payload").value = entry.payload;
  }
  $("stream").checked = Boolean(entry.stream);
  updatePayloadUi();
  $("request-panel").scrollIntoView({ behavior: "smooth", block: "start" });
  $("send").focus({ preventScroll: true });
};
wire();
app.signIn = initSignIn(app);
loadDocument();
