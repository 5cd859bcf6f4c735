// What the document says about the chosen operation, as Swagger UI shows it: the request
// body's schema under the payload editor, and each documented response (status, description,
// headers, schema, example) in the response panel, with the one just received marked; and the
// check of a received answer against the schema documented for its status.

import { $, h, withCode } from "./dom.js";
import { hangIndents, highlightJson } from "./format.js";
import { checkEvents, checkResponse, documentedResponses, requestBodyOf, responseKeyFor } from "./openapi.js";
import { describe, schemaTree } from "./schema-tree.js";
import { isDoneMarker } from "./transport.js";

const statusClass = (status) => (/^[1-5]/.test(status) ? `s${status[0]}` : "");

export function initOperationDoc(app) {
  function renderBody(op) {
    const body = requestBodyOf(app.doc, op);
    $("body-schema").hidden = !body;
    if (!body) return;
    $("body-schema-meta").textContent = `${body.mediaType}${body.required ? " · required" : " · optional"}`;
    $("body-schema-tree").replaceChildren(
      body.description ? h("div", { class: "st-desc" }, describe(body.description)) : "",
      schemaTree(app.doc, body.schema),
    );
  }

  function example(value, status) {
    // Focusable so that a keyboard can scroll it, hence named.
    const pre = h("pre", { class: "code st-example-code", tabindex: "0", "aria-label": `Example value of the ${status} response` });
    if (typeof value === "string") pre.textContent = value;
    else {
      pre.innerHTML = highlightJson(value); // highlightJson escapes every token it emits
      hangIndents(pre);
    }
    return h("details", { class: "st-example" }, h("summary", {}, "Example value"), pre);
  }

  function responseItem(response) {
    const { status, description, headers, content } = response;
    const body = [];
    if (headers.length) {
      body.push(
        h("p", { class: "st-note" }, "Headers:"),
        h("table", { class: "kv doc-headers" }, h("tbody", {},
          headers.map((header) => h("tr", {}, h("th", { scope: "row" }, header.name), h("td", {}, ...withCode(header.description)))),
        )),
      );
    }
    for (const media of content) {
      if (content.length > 1 || media.mediaType !== "application/json") body.push(h("p", { class: "st-note" }, h("code", {}, media.mediaType)));
      if (media.schema) body.push(schemaTree(app.doc, media.schema));
      if (media.example !== undefined && media.example !== null) body.push(example(media.example, status));
    }
    if (!content.length) body.push(h("p", { class: "st-note" }, "No body documented."));
    return h("li", {},
      h("details", { class: "doc-response", dataset: { status } },
        h("summary", {},
          h("span", { class: `pill ${statusClass(status)}` }, status),
          h("span", { class: "doc-response-text" }, ...withCode(description || "No description.")),
          h("span", { class: "received-flag", hidden: true }, "received"),
        ),
        h("div", { class: "doc-response-body" }, body),
      ),
    );
  }

  function renderResponses(op) {
    const responses = documentedResponses(app.doc, op);
    $("doc-responses").hidden = false;
    $("doc-responses-count").textContent = String(responses.length);
    $("doc-responses-op").textContent = `${op.method.toUpperCase()} ${op.path}`;
    $("doc-responses-list").replaceChildren(
      ...(responses.length ? responses.map(responseItem) : [h("li", { class: "muted" }, "This operation documents no responses.")]),
    );
  }

  /** Mark the documented response that `status` falls under (none when status is 0). */
  function markStatus(op, status) {
    const key = status ? responseKeyFor(op, status) : undefined;
    for (const item of $("doc-responses-list").querySelectorAll("details.doc-response")) {
      const hit = item.dataset.status === key;
      item.classList.toggle("received", hit);
      item.querySelector(".received-flag").hidden = !hit;
    }
  }

  /** Say whether the answer matches the schema documented for its status. */
  function showCheck(req, result) {
    const box = $("schema-check");
    // A cancelled answer is cut short by the user: there is nothing whole to check.
    const none = Boolean(result.networkError || result.cancelled);
    box.hidden = none;
    // The list shows the current operation's responses: another endpoint may have been chosen
    // while this answer was on its way.
    if (req.op === app.op) markStatus(req.op, none ? 0 : result.status);
    if (none) return;
    const which = `${result.status} (${req.op.method.toUpperCase()} ${req.op.path})`;
    let check;
    if (result.events.length) {
      const done = result.events.find((e) => e.event === "done");
      const chunks = result.events.filter((e) => e.event === "message" && e.data && typeof e.data === "object").length;
      if (done) check = checkResponse(app.doc, req.op, result.status, "application/json", done.data);
      else if (result.events.some(isDoneMarker)) {
        // OpenAI's form: JSON chunks, then data: [DONE]; the document describes its events.
        check = checkEvents(app.doc, req.op, result.status, result.events);
        if (check.checked && !check.problems.length) {
          box.className = "schema-check good";
          box.replaceChildren(h("p", {}, `✓ ${chunks} chunk${chunks === 1 ? "" : "s"}, then data: [DONE]: the events documented for ${which}.`));
          return;
        }
      } else {
        check = { checked: false, note: result.events.every((e) => e.event === "message")
          ? "The stream ended without data: [DONE]: it was cut short." : "The stream ended without a done event.", problems: [] };
      }
    } else check = checkResponse(app.doc, req.op, result.status, result.contentType, result.json);
    box.className = `schema-check ${!check.checked ? "neutral" : check.problems.length ? "bad" : "good"}`;
    if (!check.checked) box.replaceChildren(h("p", {}, check.note));
    else if (!check.problems.length) box.replaceChildren(h("p", {}, `✓ Matches the schema documented for ${which}.`));
    else {
      box.replaceChildren(
        h("p", {}, `✗ ${check.problems.length} mismatch${check.problems.length === 1 ? "" : "es"} with the schema documented for ${which}:`),
        h("ul", {}, check.problems.map((p) => h("li", {}, h("code", {}, p.pointer), ` ${p.message}`))),
      );
    }
  }

  return {
    render(op) {
      renderBody(op);
      renderResponses(op);
    },
    markStatus,
    showCheck,
  };
}
