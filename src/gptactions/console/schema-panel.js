// The "OpenAPI Schema" panel (the served document as YAML or JSON, foldable, with copy and
// download) and the "GPT Actions readiness" panel that checks the same document.

import { $, copyText, download, h } from "./dom.js";
import { escapeHtml, jsonNodes, nodesToHtml, nodesToText, yamlNodes } from "./format.js";
import { HTTP_METHODS } from "./openapi.js";
import { RULES, checkReadiness } from "./readiness.js";

// Which parts of the document fold: the big sections, each path, each operation, each schema.
function groupAt(path, value) {
  const [top, second, third] = path;
  if (path.length === 1 && (top === "paths" || top === "components")) return { kind: "section", name: top };
  if (path.length === 2 && top === "paths") return { kind: "path" };
  if (path.length === 2 && top === "components") return { kind: "section" };
  if (path.length === 3 && top === "paths" && HTTP_METHODS.includes(third)) {
    return { kind: "op", key: `${third} ${second}`, summary: value.summary || "", operationId: value.operationId || "" };
  }
  if (path.length === 3 && top === "components" && second === "schemas") {
    return { kind: "schema", name: third, description: value.description || "" };
  }
  return null;
}

// Operations and schemas start folded so the document reads as a table of contents.
function decorate(info) {
  if (info.kind === "op") {
    const [method, path] = [info.key.split(" ")[0].toUpperCase(), info.key.slice(info.key.indexOf(" ") + 1)];
    return {
      open: false,
      attrs: ` data-op="${escapeHtml(info.key)}"`,
      extra:
        `<span class="fold-hint">${escapeHtml(info.summary)}</span>` +
        `<button type="button" class="use" data-op="${escapeHtml(info.key)}" aria-label="Use ${escapeHtml(`${method} ${path}`)} in the request">Use</button>`,
    };
  }
  if (info.kind === "schema") {
    return { open: false, attrs: ` data-schema="${escapeHtml(info.name)}"`, extra: `<span class="fold-hint">${escapeHtml(info.description)}</span>` };
  }
  // Components start folded too: they come before the paths in most documents, and the
  // operations are what people open this panel for.
  return { open: !(info.kind === "section" && info.name === "components") };
}

export function initSchemaPanel(app) {
  let format = "yaml";
  let text = "";
  const view = $("schema-view");

  function render() {
    if (!app.doc) return;
    const nodes = format === "yaml" ? yamlNodes(app.doc, groupAt) : jsonNodes(app.doc, groupAt);
    view.innerHTML = nodesToHtml(nodes, decorate);
    text = nodesToText(nodes);
    view.dataset.format = format;
    markCurrent(app.op && app.op.key);
    renderReadiness(app);
  }

  function markCurrent(key) {
    for (const el of view.querySelectorAll("details[data-op]")) el.classList.toggle("current", el.dataset.op === key);
  }

  function setFormat(next) {
    format = next;
    $("schema-yaml").setAttribute("aria-pressed", String(next === "yaml"));
    $("schema-json").setAttribute("aria-pressed", String(next === "json"));
    render();
  }

  $("schema-yaml").addEventListener("click", () => setFormat("yaml"));
  $("schema-json").addEventListener("click", () => setFormat("json"));
  $("schema-expand").addEventListener("click", () => view.querySelectorAll("details").forEach((d) => (d.open = true)));
  $("schema-collapse").addEventListener("click", () =>
    view.querySelectorAll("details[data-op], details[data-schema]").forEach((d) => (d.open = false)),
  );
  $("schema-copy").addEventListener("click", () => copyText(text, `OpenAPI ${format.toUpperCase()}`));
  $("schema-download").addEventListener("click", () =>
    download(text, `openapi.${format}`, format === "yaml" ? "application/yaml" : "application/json"),
  );
  view.addEventListener("click", (e) => {
    const use = e.target.closest("button.use");
    if (!use) return;
    e.preventDefault(); // the button sits in a <summary>: do not fold or unfold it
    app.selectOperation(use.dataset.op, { focus: true });
  });
  return { render, markCurrent, text: () => text };
}

/** Fill the readiness pane, the tab's counter and the chip in the status bar. */
export function renderReadiness(app) {
  const findings = checkReadiness(app.doc);
  const errors = findings.filter((f) => f.level === "error").length;
  const count = $("readiness-count");
  count.textContent = findings.length ? String(findings.length) : "✓";
  count.className = `count ${findings.length ? (errors ? "bad" : "warn") : "good"}`;
  count.setAttribute("aria-label", findings.length ? `${findings.length} to fix` : "ready");

  const chip = $("readiness-chip");
  if (chip) {
    chip.replaceChildren(
      h("button", { type: "button", class: `chip ${findings.length ? (errors ? "bad" : "warn") : "good"}`, onclick: () => app.showTool("tool-readiness") },
        findings.length ? `GPT Actions: ${findings.length} to fix` : "GPT Actions: ready"),
    );
  }

  const docUrl = `${location.origin}/openapi.json`;
  const pane = $("readiness");
  const headline = findings.length
    ? h("p", { class: `verdict ${errors ? "bad" : "warn"}` }, `${findings.length} thing${findings.length === 1 ? "" : "s"} to fix before importing this document into a GPT.`)
    : h("p", { class: "verdict good" }, "Ready: ChatGPT's GPT Actions can import this document as it is.");
  const rules = RULES.map(([rule, title]) => {
    const mine = findings.filter((f) => f.rule === rule);
    const state = mine.length ? (mine.some((f) => f.level === "error") ? "bad" : "warn") : "good";
    return h("li", { class: `rule ${state}`, dataset: { rule } },
      h("span", { class: "rule-icon", "aria-hidden": "true" }, mine.length ? (state === "bad" ? "✗" : "!") : "✓"),
      h("div", {},
        h("p", { class: "rule-title" }, title, h("span", { class: "sr-only" }, mine.length ? ` — ${mine.length} to fix` : " — passes")),
        mine.length
          ? h("ul", { class: "findings" }, mine.map((f) => h("li", { class: `finding ${f.level}` },
              h("p", {}, f.message), h("p", { class: "fix" }, h("strong", {}, "Fix: "), f.fix), h("code", { class: "pointer" }, f.pointer))))
          : null,
      ),
    );
  });
  pane.replaceChildren(
    headline,
    h("ol", { class: "rules" }, rules),
    h("p", { class: "muted" }, "In the GPT editor choose Actions → Import from URL and give ", h("code", {}, docUrl),
      " once the document names your public https server (GPTACTIONS_PUBLIC_URL)."),
  );
}
