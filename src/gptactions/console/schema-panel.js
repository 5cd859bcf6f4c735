// The "OpenAPI Schema" panel (the served document as YAML or JSON, foldable, with copy and
// download) and the "GPT Actions readiness" panel that checks the same document.

import { $, copyText, download, h } from "./dom.js";
import { escapeHtml, hangIndents, jsonNodes, nodesToHtml, nodesToText, yamlNodes } from "./format.js";
import { HTTP_METHODS } from "./openapi.js";
import { renderReadiness } from "./readiness.js";

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
    hangIndents(view);
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
