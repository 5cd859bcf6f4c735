// The Usage tab: GET …/usage as two tables, requests and tokens per key and per user, over a
// window the user picks (the last hour, day, week or 30 days).

import { $, h } from "./dom.js";
import { describeFailure, sendRequest } from "./transport.js";

const count = (n) => Math.round(Number(n) || 0).toLocaleString("en");

const SUMS = [
  ["requests", "Requests"],
  ["rejected", "Rejected"],
  ["promptTokens", "Tokens in"],
  ["completionTokens", "Tokens out"],
  ["totalTokens", "Tokens"],
];

/** One table: the first columns name the row, the last ones are its sums. */
function table(caption, names, rows) {
  return h("table", { class: "data usage-table" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, [...names, ...SUMS].map(([, title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) =>
      h("tr", {},
        names.map(([key]) => h("td", { class: key === "keyId" ? "mono" : "nowrap" }, row[key] ?? "—")),
        SUMS.map(([key]) => h("td", { class: "num" }, count(row[key]))),
      ),
    )),
  );
}

export function initUsage(app) {
  const usageOp = () => app.ops.find((o) => o.method === "get" && /\/usage$/.test(o.path));

  async function load() {
    const message = $("usage-message");
    const op = usageOp();
    if (!op) {
      message.textContent = "This document has no GET …/usage operation.";
      return;
    }
    message.className = "pane-message";
    message.textContent = "Loading…";
    const url = `${app.serverUrl().replace(/\/$/, "")}${op.path}?${new URLSearchParams({ window: $("usage-window").value })}`;
    const result = await sendRequest({ url, method: "GET", headers: { ...app.authHeaders(), Accept: "application/json" } });
    if (result.networkError || result.status >= 400) {
      const f = describeFailure(result, "GET", url);
      message.className = "pane-message failure";
      message.replaceChildren(h("strong", {}, f.title), ` — ${f.message} `, f.hint ? h("span", { class: "muted" }, f.hint) : "");
      $("usage-tables").replaceChildren();
      return;
    }
    const report = result.json || {};
    const total = report.total || {};
    $("usage-tables").replaceChildren(
      table("Per key", [["name", "Key"], ["keyId", "Id"]], report.keys || []),
      table("Per user", [["userId", "User"], ["tenant", "Tenant"]], report.users || []),
    );
    const plural = (n, word) => `${count(n)} ${word}${Number(n) === 1 ? "" : "s"}`;
    message.textContent = `${report.since} to ${report.until}: ${plural(total.requests, "request")}, ` +
      `${plural(total.totalTokens, "token")}${report.truncated ? " (only the heaviest keys and users are listed)" : ""}.`;
  }

  $("usage-form").addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  return { load };
}
