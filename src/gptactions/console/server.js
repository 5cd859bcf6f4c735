// The Server tab: the main figures of GET /metrics (Prometheus' text format), read in the browser.

import { $, h } from "./dom.js";
import { describeFailure, sendRequest } from "./transport.js";

/** Samples of a Prometheus text page: [{name, labels, value}], comments and blank lines skipped. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of String(text).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function total(samples, name, keep = () => true) {
  return samples.filter((s) => s.name === name && keep(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

/** The quantile `q` of a histogram, from its cumulative buckets (linear within a bucket). */
export function quantile(samples, name, q) {
  const byBound = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byBound.set(le, (byBound.get(le) || 0) + s.value);
  }
  const buckets = [...byBound].sort((a, b) => a[0] - b[0]);
  const count = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!count) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const [bound, cumulative] of buckets) {
    if (cumulative >= rank) {
      if (bound === Infinity) return lower;
      const inBucket = cumulative - below;
      return inBucket ? lower + ((bound - lower) * (rank - below)) / inBucket : bound;
    }
    lower = bound;
    below = cumulative;
  }
  return lower;
}

/** The figures the tab shows, from the samples of one page. */
export function summarize(samples) {
  const requests = total(samples, "gptactions_http_requests_total");
  const serverErrors = total(samples, "gptactions_http_requests_total", (l) => /^5/.test(l.status || ""));
  const commits = total(samples, "gptactions_db_commit_duration_seconds_count");
  const firstTokens = total(samples, "gptactions_time_to_first_token_seconds_count");
  return {
    requests,
    serverErrors,
    p95: quantile(samples, "gptactions_http_request_duration_seconds", 0.95),
    tokensIn: total(samples, "gptactions_tokens_total", (l) => l.direction === "input"),
    tokensOut: total(samples, "gptactions_tokens_total", (l) => l.direction === "output"),
    interactions: total(samples, "gptactions_interactions_total"),
    backendErrors: total(samples, "gptactions_backend_errors_total"),
    queue: total(samples, "gptactions_model_queue_depth"),
    running: total(samples, "gptactions_model_sequences_in_use"),
    firstToken: firstTokens ? total(samples, "gptactions_time_to_first_token_seconds_sum") / firstTokens : null,
    commit: commits ? total(samples, "gptactions_db_commit_duration_seconds_sum") / commits : null,
    rateLimited: total(samples, "gptactions_rate_limit_rejections_total"),
  };
}

const count = (n) => Math.round(n).toLocaleString("en");
const seconds = (s) => (s === null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

const FIGURES = [
  ["requests", "Requests answered", count],
  ["serverErrors", "Server errors (5xx)", count],
  ["p95", "Latency, 95th percentile", seconds],
  ["interactions", "Interactions logged", count],
  ["tokensIn", "Tokens read", count],
  ["tokensOut", "Tokens written", count],
  ["firstToken", "Time to first token, mean", seconds],
  ["queue", "Waiting for the model", count],
  ["running", "Generations running", count],
  ["backendErrors", "Backend errors", count],
  ["commit", "Database commit, mean", seconds],
  ["rateLimited", "Rate-limit rejections", count],
];

export function initServer(app) {
  async function load() {
    const message = $("server-message");
    message.className = "pane-message";
    message.textContent = "Loading…";
    const url = `${app.serverUrl().replace(/\/$/, "")}/metrics`;
    const result = await sendRequest({ url, method: "GET", headers: { ...app.authHeaders(), Accept: "text/plain" } });
    if (result.networkError || result.status >= 400) {
      const f = describeFailure(result, "GET", url);
      message.className = "pane-message failure";
      message.replaceChildren(h("strong", {}, f.title), ` — ${f.message} `, f.hint ? h("span", { class: "muted" }, f.hint) : "");
      return;
    }
    const figures = summarize(parseMetrics(result.text));
    $("server-figures").replaceChildren(
      ...FIGURES.map(([key, label, format]) =>
        h("div", { class: "figure", "data-figure": key }, h("dt", {}, label), h("dd", {}, format(figures[key]))),
      ),
    );
    message.textContent = `Read from ${url} at ${new Date().toLocaleTimeString()}.`;
  }

  $("server-refresh").addEventListener("click", load);
  return { load };
}
