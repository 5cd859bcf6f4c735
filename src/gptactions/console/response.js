// The response panel: the status, the body (streamed text as it arrives), the headers, and what
// went wrong in words. Each operation keeps its last answer, shown again when it is chosen again
// (as Swagger UI keeps one under each operation); another operation's answer is never left on
// screen as if it were this one's. Screen readers hear when an answer starts and when it is in,
// never each streamed token: the token counter is outside the live region.

import { $, breakAfterSlashes, h } from "./dom.js";
import { escapeHtml, formatBytes, hangIndents, highlightJson } from "./format.js";
import { CANCELLED, describeFailure, isDoneMarker, streamFailure } from "./transport.js";

const REASONS = { 200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
  404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout" };

const reduceMotion = () => matchMedia("(prefers-reduced-motion: reduce)").matches;

export function initResponse(app) {
  const answers = new Map(); // operation key -> {req, result, streamed, at} of its last answer
  let onScreen = null; // the operation key whose answer the panel shows, if any

  const setStatusClass = (cls) => ($("status-code").className = `status-badge status-${cls}`);
  // Counts the answers shown, so scripts (and the browser tests) can wait for the next one.
  const markShown = () => ($("response-panel").dataset.shown = String(Number($("response-panel").dataset.shown || 0) + 1));

  function clearBody(placeholder) {
    $("failure").hidden = true;
    $("schema-check").hidden = true;
    $("body-pretty").replaceChildren(h("span", { class: "placeholder" }, placeholder));
  }

  /** An empty panel for `op`, which has no answer yet. */
  function blank(op) {
    onScreen = null;
    clearBody(`Press Send (or Ctrl+Enter): the answer of ${op.method.toUpperCase()} ${op.path} appears here.`);
    $("status-code").textContent = "—";
    setStatusClass("none");
    $("response-meta").textContent = "";
    $("body-raw").textContent = "";
    $("body-copy").disabled = true;
    $("headers-table").tBodies[0].replaceChildren();
    app.operationDoc.markStatus(op, 0);
  }

  /** The operation now chosen: its own last answer, or an empty panel. */
  function follow(op) {
    if (app.busy || onScreen === op.key) return; // an answer on its way is shown when it comes
    const last = answers.get(op.key);
    if (last) show(last.req, last.result, last.streamed, last.at);
    else if (onScreen !== null || $("response-panel").dataset.shown) blank(op); // else the first hint stays
  }

  /** Bring the status into view when it is off screen (the Send button may be far below it). */
  function reveal() {
    const box = $("response-summary").getBoundingClientRect();
    if (box.top >= 0 && box.bottom <= innerHeight) return;
    $("response-summary").scrollIntoView({ block: "nearest", behavior: reduceMotion() ? "auto" : "smooth" });
  }

  /** Why the request was not sent, and no previous answer left to be taken for this one's. */
  function notSent(reason, field) {
    onScreen = null;
    clearBody("Not sent.");
    $("status-code").textContent = "Not sent";
    setStatusClass("none");
    $("response-meta").textContent = reason;
    if (field) field.focus();
    markShown();
  }

  function busy(on) {
    // aria-disabled rather than disabled: a disabled button drops the keyboard focus.
    $("send").setAttribute("aria-disabled", String(on));
    $("send").textContent = on ? "Sending…" : "Send";
    $("cancel").hidden = !on;
    $("response-panel").setAttribute("aria-busy", String(on));
    progress(0);
    if (on) {
      onScreen = null;
      $("status-code").textContent = "…";
      setStatusClass("pending");
      $("response-meta").textContent = "Waiting for the answer…";
      clearBody("Waiting for the server…");
    }
  }

  /** The streamed-token counter (not announced); the live status says "Streaming…" once. */
  function progress(tokens) {
    const el = $("stream-progress");
    el.hidden = !tokens;
    el.textContent = tokens ? `Streaming… ${tokens} token${tokens === 1 ? "" : "s"} so far` : "";
    if (tokens === 1) $("response-meta").textContent = "Streaming…";
  }

  function showFailure(req, result) {
    const streamError = !result.cancelled && streamFailure(result.events);
    const f = streamError || result.streamError
      ? { ...describeFailure({ ...result, json: streamError ? streamError.data : undefined, text: result.streamError || "" }, req.method, req.url),
          title: result.contentType.startsWith("text/event-stream") ? "The stream ended with an error" : "The answer broke off",
          hint: "The text that arrived before it is in the Body below." }
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
    $("failure").replaceChildren(...parts.filter(Boolean));
  }

  /** The text as it was streamed, then how the stream ended; every event is in the Raw view. */
  function streamBody(result, streamed) {
    const text = streamed ? `<span class="streamed">${escapeHtml(streamed)}</span>` : "";
    const chunks = result.events.filter((e) => e.event === "message" && e.data && typeof e.data === "object");
    if (result.events.some(isDoneMarker) || (chunks.length && chunks.length === result.events.length)) {
      // OpenAI's form: data-only chunks, then `data: [DONE]`.
      const ended = result.events.some(isDoneMarker) ? ", then data: [DONE]" : ", without data: [DONE] at the end";
      const last = chunks[chunks.length - 1];
      return `${text}<span class="event-note">${escapeHtml(`${chunks.length} chunk${chunks.length === 1 ? "" : "s"}${ended}${last ? "; the last chunk:" : ""}`)}</span>` +
        (last ? highlightJson(last.data) : "");
    }
    const last = result.events[result.events.length - 1];
    const counts = {};
    for (const ev of result.events) counts[ev.event] = (counts[ev.event] || 0) + 1;
    const tally = Object.entries(counts).map(([name, n]) => `${n} ${name}`).join(", ");
    return `${text}<span class="event-note">${escapeHtml(`${result.events.length} events (${tally}); the last one, event: ${last.event}`)}</span>` +
      highlightJson(last.data);
  }

  /** Show an answer; `at` is when an earlier one arrived (it is being shown again). */
  function show(req, result, streamed, at) {
    onScreen = req.op.key;
    if (!at) answers.set(req.op.key, { req, result, streamed, at: new Date() });
    const statusEl = $("status-code");
    if (result.networkError || result.cancelled) {
      const cancelled = result.cancelled || result.networkError === CANCELLED;
      statusEl.textContent = cancelled ? "Cancelled" : result.refused ? "Not sent" : "No response";
      setStatusClass(cancelled || result.refused ? "none" : "error");
    } else {
      statusEl.textContent = `${result.status} ${result.statusText || REASONS[result.status] || ""}`.trim();
      setStatusClass(`${String(result.status)[0]}xx`);
    }
    const meta = [`${Math.round(result.ms)} ms`];
    if (result.size !== undefined) meta.push(formatBytes(result.size));
    if (result.events.length) meta.push(`streamed ${result.events.length} events, first byte after ${Math.round(result.firstByteMs)} ms`);
    if (at) meta.unshift(`Answer of ${at.toLocaleTimeString()}`);
    // One node, as its text was: the live region changes once.
    $("response-meta").replaceChildren(h("span", {}, `${meta.join(" · ")} · ${req.method} `, breakAfterSlashes(req.url.replace(location.origin, ""))));

    // A stream can fail after its 200: its error event (or a broken connection) is a failure too.
    // A cancelled answer is shown as such, whatever status came before the user stopped it.
    const failed = result.networkError || result.cancelled || result.status >= 400 || streamFailure(result.events) || result.streamError;
    $("failure").hidden = !failed;
    if (failed) showFailure(req, result);

    const pretty = $("body-pretty");
    if (result.json !== undefined) pretty.innerHTML = highlightJson(result.json);
    else if (result.events.length) pretty.innerHTML = streamBody(result, streamed);
    else if (result.text) pretty.textContent = result.text;
    else pretty.replaceChildren(h("span", { class: "placeholder" }, result.networkError ? "No answer." : "The body is empty."));
    hangIndents(pretty);
    $("body-raw").textContent = result.text || "";
    $("body-copy").disabled = !result.text;
    // A 401, or a key no server could take, points at the key field: that is where the fix is.
    const problem = app.keyField.problem();
    if (result.status === 401) {
      app.keyField.say(app.key() ? "The server refused this key (401): paste a valid one." : "This operation needs a key: paste it here.", true);
    } else app.keyField.say(problem, Boolean(problem));
    $("headers-table").tBodies[0].replaceChildren(
      ...(result.headers || []).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v))),
    );
    app.operationDoc.showCheck(req, result);
  }

  return { show, follow, blank, busy, notSent, progress, reveal, markShown };
}
