// The logs view: GET /logs as a table, its filters from the document, paging through the
// `Link: <…>; rel="next"` header; a rejected request can be put back into the request form.

import { $, h } from "./dom.js";
import { paramField, readParams, writeParams } from "./fields.js";
import { describeFailure, sendRequest } from "./transport.js";

const COLUMNS = [
  ["timestamp", "Time"],
  ["kind", "Kind"],
  ["action", "Action"],
  ["userId", "User"],
  ["conversationId", "Conversation"],
  ["message", "Message"],
  ["reply", "Reply"],
  ["status", "Status"],
  ["httpStatus", "HTTP"],
  ["endpoint", "Endpoint"],
  ["finishReason", "Finish"],
  ["error", "Error"],
  ["model", "Model"],
  ["latencyMs", "Latency"],
  ["tokens", "Tokens in / out"],
  ["cachedTokens", "Cached tokens"],
  ["id", "Id"],
];

/** The URL of rel="next" in a Link header, resolved against the page that sent it. */
export function nextLink(header, base) {
  if (!header) return null;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]*)>\s*;(.*)$/);
    if (m && /rel\s*=\s*"?([^"]*\s)?next(\s[^"]*)?"?/i.test(m[2])) return new URL(m[1], base).href;
  }
  return null;
}

// The pager's buttons are aria-disabled, never disabled: a disabled button drops the keyboard
// focus to the page, and Enter on "Next page →" must leave it there for the next press.
const FILTERS_SLOT = "gptactions.logsFilters";
const offer = (button, on) => button.setAttribute("aria-disabled", String(!on));
const offered = (button) => button.getAttribute("aria-disabled") !== "true";

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? "");
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function initLogs(app) {
  let current = null;
  let next = null;
  const back = [];
  const logsOp = () => app.ops.find((o) => o.method === "get" && /\/logs$/.test(o.path));

  /** Build the filter fields from the document's parameters for GET /logs. */
  function render() {
    const op = logsOp();
    $("logs-form").hidden = !op;
    if (!op) {
      $("logs-message").textContent = "This document has no GET …/logs operation.";
      return;
    }
    const query = op.parameters.filter((p) => p.in === "query" && p.name !== "cursor");
    const search = query.find((p) => p.name === "q");
    const filters = query.filter((p) => p !== search);
    $("logs-fields").replaceChildren(
      ...(search ? [searchField(search)] : []),
      ...filters.map((p) => paramField(app.doc, p, "logs")),
    );
    try {
      writeParams($("logs-fields"), JSON.parse(app.store.get(sessionStorage, FILTERS_SLOT) || "{}"));
    } catch {
      /* unreadable: start with empty filters */
    }
    $("logs-message").textContent = "Choose filters and press Load logs (needs the API key).";
  }

  /** The full-text search (the `q` parameter) as a search box above the other filters. */
  function searchField(param) {
    const id = "logs-search";
    return h("div", { class: "field logs-search" },
      h("label", { for: id }, "Search messages and replies"),
      h("input", {
        id,
        type: "search",
        name: "q",
        dataset: { name: "q", in: "query" },
        maxlength: param.schema && param.schema.maxLength,
        placeholder: "Words to find, e.g. refund invoice",
        autocomplete: "off",
        "aria-describedby": `${id}-help`,
      }),
      h("p", { class: "help", id: `${id}-help` }, "Rows whose message or reply holds every word; combines with the filters below."),
    );
  }

  /** Keep the filters of the last load for a reload of this tab (sessionStorage, as drafts). */
  const keepFilters = () => app.store.set(sessionStorage, FILTERS_SLOT, JSON.stringify(readParams($("logs-fields")).values));

  function firstPageUrl() {
    const op = logsOp();
    const qs = new URLSearchParams(readParams($("logs-fields")).query).toString();
    const url = app.serverUrl().replace(/\/$/, "") + op.path;
    return qs ? `${url}?${qs}` : url;
  }

  async function load(url) {
    const message = $("logs-message");
    message.className = "pane-message";
    message.textContent = "Loading…";
    offer($("logs-next"), false);
    offer($("logs-prev"), false);
    const result = await sendRequest({ url, method: "GET", headers: { ...app.authHeaders(), Accept: "application/json" } });
    if (result.networkError || result.status >= 400) {
      const f = describeFailure(result, "GET", url);
      message.className = "pane-message failure";
      message.replaceChildren(h("strong", {}, f.title), ` — ${f.message} `, f.hint ? h("span", { class: "muted" }, f.hint) : "");
      // The rows of the previous search would read as this one's: they go (Previous still goes
      // back to the page before).
      renderTable([]);
      next = null;
      $("logs-page").textContent = "";
      offer($("logs-prev"), back.length > 0);
      return;
    }
    const rows = Array.isArray(result.json) ? result.json : (result.json && result.json.items) || [];
    current = url;
    const link = (result.headers.find(([k]) => k.toLowerCase() === "link") || [])[1];
    next = nextLink(link, url);
    renderTable(rows);
    message.textContent = rows.length ? "" : "No interactions match these filters.";
    $("logs-page").textContent = `Page ${back.length + 1} · ${rows.length} row${rows.length === 1 ? "" : "s"}${next ? " · more after this" : ""}`;
    offer($("logs-next"), Boolean(next));
    offer($("logs-prev"), back.length > 0);
  }

  function cell(key, row) {
    const value = row[key];
    switch (key) {
      case "kind":
        // An MCP tool call (POST /mcp?tool=...) is not an operation of the request form.
        return h("td", { class: "nowrap" }, value ?? "", row.kind === "rejected" && row.endpoint && !/^\S+ \/mcp[?]/.test(row.endpoint)
          ? [" ", h("button", { type: "button", class: "link", "aria-label": `Re-send this ${row.endpoint} request from the request form`, onclick: () => resend(row) }, "Re-send")]
          : null);
      case "timestamp":
        return h("td", { class: "nowrap" }, h("time", { datetime: value, title: value }, formatTime(value)));
      case "conversationId":
        return h("td", {}, value
          ? h("button", { type: "button", class: "link mono", title: value, "aria-label": `Show only conversation ${value}`, onclick: () => filterConversation(value) },
              value.length > 16 ? `${value.slice(0, 9)}…${value.slice(-4)}` : value)
          : "");
      case "userId":
        return h("td", { class: "nowrap" }, value ?? "");
      case "message":
      case "reply":
      case "error":
        return h("td", { class: "text" }, h("div", { class: "clamp", title: value ?? "" }, value ?? ""));
      case "status":
        return h("td", {}, value !== undefined ? h("span", { class: `pill ${/^(ok|success|2\d\d)$/i.test(String(value)) ? "good" : "bad"}` }, String(value)) : "");
      case "latencyMs":
        return h("td", { class: "num" }, value !== undefined && value !== null ? `${value} ms` : "");
      case "tokens":
        return h("td", { class: "num" }, row.promptTokens !== undefined ? `${row.promptTokens ?? "–"} / ${row.completionTokens ?? "–"}` : "");
      default:
        return h("td", {}, value === undefined || value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value));
    }
  }

  /** A cell with its column's name, which a phone shows beside the value. */
  function labelled(td, title) {
    td.setAttribute("role", "cell");
    td.dataset.label = title;
    return td;
  }

  /** Say which columns are cut off at either edge of the table, and fade that edge. */
  function updateScrollCue() {
    const wrap = $("logs-wrap");
    const cue = $("logs-scroll-cue");
    const table = $("logs-table");
    const box = wrap.getBoundingClientRect();
    // Nothing is cut off when the table fits (on a phone its rows are cards, its head hidden).
    const fits = wrap.scrollWidth <= wrap.clientWidth + 1;
    const heads = table.hidden || fits ? [] : [...table.tHead.querySelectorAll("th")];
    const names = (cut) => heads.filter((th) => cut(th.getBoundingClientRect())).map((th) => th.textContent);
    const right = names((r) => r.right > box.right + 1);
    const left = names((r) => r.left < box.left - 1);
    wrap.classList.toggle("more-right", right.length > 0);
    wrap.classList.toggle("more-left", left.length > 0);
    cue.hidden = !right.length && !left.length;
    const said = JSON.stringify([left, right]);
    if (cue.dataset.said === said) return; // unchanged: keep the buttons (and their focus)
    cue.dataset.said = said;
    const parts = [];
    if (left.length) parts.push(h("button", { type: "button", class: "link", onclick: () => wrap.scrollBy({ left: -wrap.clientWidth, behavior: "smooth" }) }, `← ${left.join(", ")}`));
    if (right.length) parts.push(h("button", { type: "button", class: "link", onclick: () => wrap.scrollBy({ left: wrap.clientWidth, behavior: "smooth" }) }, `${right.join(", ")} →`));
    cue.replaceChildren("Scroll sideways for more columns: ", ...parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
  }
  $("logs-wrap").addEventListener("scroll", updateScrollCue, { passive: true });
  new ResizeObserver(updateScrollCue).observe($("logs-wrap"));

  function renderTable(rows) {
    const table = $("logs-table");
    table.hidden = rows.length === 0;
    // Columns of some kinds only (a rejection's status and endpoint) show when a row has them.
    const sparse = new Set(["httpStatus", "endpoint", "finishReason"]);
    const present = (key) => rows.some((r) => (key === "tokens" ? r.promptTokens !== undefined : sparse.has(key) ? r[key] != null : r[key] !== undefined));
    // nextCursor (on a page's last row when more follow) is the pager's, not a column.
    const known = new Set([...COLUMNS.map(([k]) => k), "promptTokens", "completionTokens", "nextCursor"]);
    const extra = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => !known.has(k));
    const columns = [...COLUMNS.filter(([k]) => present(k)), ...extra.map((k) => [k, k])];
    // The roles keep the table a table for screen readers when a phone shows its rows as cards;
    // data-label is the column name each card shows beside a value.
    table.tHead.replaceChildren(h("tr", { role: "row" }, columns.map(([, title]) => h("th", { scope: "col", role: "columnheader" }, title))));
    table.tBodies[0].replaceChildren(
      ...rows.map((row) =>
        h("tr", {
          role: "row",
          tabindex: "0",
          title: "Select to show the full message and reply",
          onclick: (e) => !e.target.closest("button") && e.currentTarget.classList.toggle("expanded"),
          onkeydown: (e) => e.key === "Enter" && e.target === e.currentTarget && e.currentTarget.classList.toggle("expanded"),
        }, columns.map(([k, title]) => labelled(cell(k, row), title))),
      ),
    );
    updateScrollCue();
  }

  /** Put a rejected request back into the request form, its body as it was sent. */
  function resend(row) {
    const [method, target] = row.endpoint.split(" ");
    const [path, query = ""] = target.split("?");
    const params = Object.fromEntries([...new URLSearchParams(query)].map(([k, v]) => [`query:${k}`, v]));
    app.restore({ opKey: `${method.toLowerCase()} ${path}`, method, path, server: app.serverUrl(), params, payload: method === "GET" ? "" : row.message, stream: false });
  }

  function filterConversation(id) {
    const input = $("logs-fields").querySelector('[data-name="conversationId"]');
    if (!input) return;
    input.value = id;
    back.length = 0;
    keepFilters();
    load(firstPageUrl());
  }

  $("logs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    back.length = 0;
    keepFilters();
    load(firstPageUrl());
  });
  // A submit the browser blocks (a filter out of its range) fires no submit event: the answer to
  // the previous one must not stay as if it were this one's, so the pane says why instead.
  $("logs-form").addEventListener("invalid", (e) => {
    const field = $("logs-fields").querySelector(":invalid") || e.target; // the one the browser points at
    const message = $("logs-message");
    message.className = "pane-message failure";
    message.replaceChildren(h("strong", {}, "Not loaded"), ` — ${field.name}: ${field.validationMessage}`);
  }, true);
  $("logs-form").addEventListener("reset", () => setTimeout(() => $("logs-form").requestSubmit(), 0));
  $("logs-next").addEventListener("click", () => {
    if (!offered($("logs-next")) || !next) return;
    back.push(current);
    load(next);
  });
  $("logs-prev").addEventListener("click", () => offered($("logs-prev")) && back.length && load(back.pop()));
  /** Forget the filters (they may name a user) and the rows shown: the user has left. */
  function clear() {
    app.store.del(sessionStorage, FILTERS_SLOT);
    current = null;
    next = null;
    back.length = 0;
    renderTable([]);
    $("logs-page").textContent = "";
    offer($("logs-next"), false);
    offer($("logs-prev"), false);
    $("logs-message").className = "pane-message";
    if (app.doc) render(); // empty filter fields
  }

  return { render, load, nextLink, clear };
}
