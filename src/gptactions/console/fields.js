// Form fields generated from OpenAPI parameters: used for the request's query/path
// parameters and for the logs filters, so both follow the served document.

import { h } from "./dom.js";
import { deref } from "./openapi.js";

function placeholderFor(schema, param) {
  if (param.example !== undefined) return String(param.example);
  if (schema.example !== undefined) return String(schema.example);
  if (schema.format === "date-time") return "2025-01-31T12:00:00Z";
  if (schema.default !== undefined && schema.default !== null) return String(schema.default);
  return "";
}

/** One labelled field for `param`; its input carries data-name and data-in. */
export function paramField(doc, param, idPrefix) {
  const schema = deref(doc, param.schema) || {};
  const id = `${idPrefix}-${param.in}-${param.name}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const helpId = `${id}-help`;
  const common = {
    id,
    name: param.name,
    "aria-describedby": param.description ? helpId : undefined,
    required: param.required ? true : undefined,
    dataset: { name: param.name, in: param.in },
  };
  let input;
  if (Array.isArray(schema.enum) || schema.type === "boolean") {
    const values = schema.type === "boolean" ? ["true", "false"] : schema.enum.map(String);
    input = h("select", common, h("option", { value: "" }, "—"), values.map((v) => h("option", { value: v }, v)));
  } else {
    const numeric = schema.type === "integer" || schema.type === "number";
    input = h("input", {
      ...common,
      type: numeric ? "number" : "text",
      inputmode: numeric ? "numeric" : undefined,
      step: schema.type === "integer" ? "1" : undefined,
      min: schema.minimum,
      max: schema.maximum,
      placeholder: placeholderFor(schema, param),
      autocomplete: "off",
      spellcheck: "false",
    });
  }
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, param.name, param.required ? h("span", { class: "req", title: "required" }, " *") : null,
      h("span", { class: "where" }, ` ${param.in}`)),
    input,
    param.description ? h("p", { class: "help", id: helpId }, param.description) : null,
  );
}

/** The filled-in values of the parameter inputs inside `container`. */
export function readParams(container) {
  const out = { query: [], path: {}, header: {}, values: {} };
  for (const input of container.querySelectorAll("[data-name]")) {
    const value = input.value.trim();
    out.values[`${input.dataset.in}:${input.dataset.name}`] = input.value;
    if (!value) continue;
    if (input.dataset.in === "query") out.query.push([input.dataset.name, value]);
    else if (input.dataset.in === "path") out.path[input.dataset.name] = value;
    else if (input.dataset.in === "header") out.header[input.dataset.name] = value;
  }
  return out;
}

/** Put back values saved by readParams (for history and when switching endpoints). */
export function writeParams(container, values = {}) {
  for (const input of container.querySelectorAll("[data-name]")) {
    const saved = values[`${input.dataset.in}:${input.dataset.name}`];
    if (saved !== undefined) input.value = saved;
  }
}
