// A JSON schema as a reader wants it (Swagger UI's "Schema" view): each property on its own
// line with its type, whether it is required, its limits and its description; nested objects
// and the options of a oneOf fold. Built from DOM nodes only: the descriptions are the
// document's text (an action's may be user-defined), so none of it is parsed as HTML.

import { h, withCode } from "./dom.js";
import { deref, resolvePointer } from "./openapi.js";

const MAX_DEPTH = 10;
const EXAMPLE_CHARS = 120;

/**
 * `node` with its $refs followed, its allOf merged and an "X or null" anyOf/oneOf unwrapped:
 * {schema, name, refs}. `name` is the model's (the first ref's last segment); `refs` are the
 * references followed to get there, so a schema that contains itself is shown once, not forever.
 */
function view(doc, node, depth = 0) {
  const { schema, name, refs } = followed(doc, node, depth);
  const choice = options(doc, schema);
  if (!choice || choice.real.length !== 1 || hasProperties(schema) || depth > MAX_DEPTH) return { schema, name, refs };
  const inner = view(doc, choice.real[0], depth + 1);
  inner.refs.forEach((r) => refs.add(r));
  const { oneOf, anyOf, ...own } = schema;
  return { schema: { ...inner.schema, ...own, ...(choice.nullable ? { nullable: true } : {}) }, name: name || inner.name, refs };
}

/** `node` with its $refs followed and its allOf merged (view without the unwrapping). */
function followed(doc, node, depth) {
  let name = "";
  const refs = new Set();
  let schema = node;
  while (schema && typeof schema === "object" && typeof schema.$ref === "string") {
    if (refs.has(schema.$ref)) return { schema: {}, name, refs };
    refs.add(schema.$ref);
    name ||= schema.$ref.split("/").pop();
    // Keywords beside a $ref (3.1 allows them: a property's own description) win over the target's.
    const { $ref, ...beside } = schema;
    const target = resolvePointer(doc, $ref);
    schema = target && typeof target === "object" ? { ...target, ...beside } : beside;
  }
  schema = schema && typeof schema === "object" ? schema : {};
  if (!Array.isArray(schema.allOf) || depth > MAX_DEPTH) return { schema, name, refs };
  // allOf: one object with every part's properties and required names (what a reader means).
  const all = { ...schema, properties: {}, required: [...(schema.required || [])] };
  delete all.allOf;
  for (const part of schema.allOf) {
    const inner = view(doc, part, depth + 1);
    name ||= schema.allOf.length === 1 ? inner.name : "";
    inner.refs.forEach((r) => refs.add(r));
    for (const [key, value] of Object.entries(inner.schema)) {
      if (key === "properties") Object.assign(all.properties, value);
      else if (key === "required") all.required.push(...value);
      else if (all[key] === undefined) all[key] = value;
    }
  }
  Object.assign(all.properties, schema.properties || {});
  if (!Object.keys(all.properties).length) delete all.properties;
  if (!all.required.length) delete all.required;
  return { schema: all, name, refs };
}

const isNullSchema = (doc, node) => {
  const s = deref(doc, node) || {};
  return s.type === "null" || (Array.isArray(s.enum) && s.enum.length === 1 && s.enum[0] === null);
};

/** The non-null options of a oneOf/anyOf, and whether null is one of them. */
function options(doc, schema) {
  const all = schema.oneOf || schema.anyOf;
  if (!Array.isArray(all) || !all.length) return null;
  const real = all.filter((o) => !isNullSchema(doc, o));
  return { kind: schema.oneOf ? "one of" : "any of", real, nullable: real.length < all.length };
}

const hasProperties = (schema) => Boolean(schema.properties && Object.keys(schema.properties).length);

const hasStructure = (doc, node) => {
  const s = view(doc, node).schema;
  return Boolean(hasProperties(s) || s.oneOf || s.anyOf || (s.items && hasStructure(doc, s.items)));
};

function baseType(schema) {
  const types = Array.isArray(schema.type) ? schema.type.filter((t) => t !== "null") : schema.type ? [schema.type] : [];
  if (types.length) return types.join(" or ");
  if (schema.properties || schema.additionalProperties) return "object";
  if (schema.items) return "array";
  if (Array.isArray(schema.enum) && schema.enum.length) {
    const kinds = [...new Set(schema.enum.filter((v) => v !== null).map((v) => typeof v))];
    return kinds.length === 1 ? kinds[0] : "any";
  }
  return "any";
}

/** "string (date-time)", "array of Message", "ConversationRequest", "integer or null". */
export function typeText(doc, node, depth = 0) {
  const { schema, name } = view(doc, node);
  const choice = options(doc, schema);
  let nullable = schema.nullable === true || (Array.isArray(schema.type) && schema.type.includes("null"));
  let text;
  if (choice && !hasProperties(schema)) {
    nullable ||= choice.nullable;
    if (name) text = name;
    else if (choice.real.every((o) => !hasStructure(doc, o)) && depth < 3) text = choice.real.map((o) => typeText(doc, o, depth + 1)).join(" or ");
    else text = `${choice.kind} ${choice.real.length} schemas`;
  } else {
    const type = baseType(schema);
    if (type === "array") text = `array of ${depth < 3 ? typeText(doc, schema.items || {}, depth + 1) : "…"}`;
    else if (type === "object" && name) text = name;
    else if (type === "object" && !hasProperties(schema) && schema.additionalProperties && typeof schema.additionalProperties === "object") {
      text = `map of ${depth < 3 ? typeText(doc, schema.additionalProperties, depth + 1) : "…"}`;
    } else text = schema.format ? `${type} (${schema.format})` : type;
  }
  return nullable && !text.endsWith(" or null") ? `${text} or null` : text;
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function sizeText(min, max, one, many) {
  if (min !== undefined && max !== undefined) return min === max ? `exactly ${plural(max, one, many)}` : `${min} to ${plural(max, one, many)}`;
  if (min !== undefined) return min === 1 && one !== "item" ? "not empty" : `at least ${plural(min, one, many)}`;
  return `at most ${plural(max, one, many)}`;
}

function rangeText(schema) {
  const exMin = typeof schema.exclusiveMinimum === "number" ? schema.exclusiveMinimum : schema.exclusiveMinimum === true ? schema.minimum : undefined;
  const exMax = typeof schema.exclusiveMaximum === "number" ? schema.exclusiveMaximum : schema.exclusiveMaximum === true ? schema.maximum : undefined;
  const low = exMin !== undefined ? `> ${exMin}` : schema.minimum !== undefined ? `≥ ${schema.minimum}` : "";
  const high = exMax !== undefined ? `< ${exMax}` : schema.maximum !== undefined ? `≤ ${schema.maximum}` : "";
  if (low.startsWith("≥") && high.startsWith("≤")) return `${schema.minimum} to ${schema.maximum}`;
  return [low, high].filter(Boolean).join(", ");
}

function valueCode(value) {
  let text = JSON.stringify(value);
  if (text === undefined) text = String(value);
  if (text.length > EXAMPLE_CHARS) text = `${text.slice(0, EXAMPLE_CHARS - 1)}…`;
  return h("code", {}, text);
}

/** The limits and notes of one schema (not its type or description), as a list of nodes. */
export function limitsOf(schema) {
  const out = [];
  if (schema.minLength !== undefined || schema.maxLength !== undefined) out.push(sizeText(schema.minLength, schema.maxLength, "character"));
  const range = rangeText(schema);
  if (range) out.push(range);
  if (schema.multipleOf !== undefined) out.push(`multiple of ${schema.multipleOf}`);
  if (schema.minItems !== undefined || schema.maxItems !== undefined) out.push(sizeText(schema.minItems, schema.maxItems, "item"));
  if (schema.uniqueItems) out.push("no duplicates");
  if (schema.minProperties !== undefined || schema.maxProperties !== undefined) {
    out.push(sizeText(schema.minProperties, schema.maxProperties, "property", "properties"));
  }
  if (schema.pattern) out.push(["pattern ", h("code", {}, schema.pattern)]);
  if (Array.isArray(schema.enum) && schema.enum.length) {
    out.push(["one of ", ...schema.enum.flatMap((v, i) => (i ? [" ", valueCode(v)] : [valueCode(v)]))]);
  }
  if (schema.const !== undefined) out.push(["always ", valueCode(schema.const)]);
  if (schema.default !== undefined) out.push(["default ", valueCode(schema.default)]);
  if (schema.example !== undefined) out.push(["example ", valueCode(schema.example)]);
  if (schema.properties && schema.additionalProperties === false) out.push("no other properties");
  if (schema.readOnly) out.push("read-only");
  if (schema.writeOnly) out.push("write-only");
  if (schema.deprecated) out.push("deprecated");
  return out;
}

function limitsLine(schema, prefix = "") {
  const limits = limitsOf(schema);
  if (!limits.length) return null;
  return h("p", { class: "st-limits" }, prefix, limits.flatMap((l, i) => (i ? [" · ", l] : [l])).flat());
}

/** Description text as nodes: ```fenced``` blocks as <pre>, `code spans`, line breaks kept. */
export function describe(text) {
  return String(text)
    .split(/```[\w-]*\n?([\s\S]*?)```/)
    .map((part, i) => (i % 2 ? h("pre", { class: "st-pre" }, part.replace(/\n$/, "")) : part.trim() ? h("p", {}, ...withCode(part.trim())) : null));
}

const description = (schema) => (schema.description ? h("div", { class: "st-desc" }, describe(schema.description)) : null);

function fold(summary, content, open) {
  return h("details", { class: "st-fold", open }, h("summary", {}, summary), content);
}

/** What sits under a schema's own line: its properties, its items' or the options; or null. */
function children(doc, v, depth, ancestors) {
  const { schema } = v;
  if (depth > MAX_DEPTH) return h("p", { class: "st-note" }, "… (nested too deep to show)");
  const seen = new Set([...ancestors, ...v.refs]);
  const parts = [];
  if (hasProperties(schema)) {
    const required = new Set(schema.required || []);
    parts.push(
      h("ul", { class: "st-props" },
        Object.entries(schema.properties).map(([name, sub]) => property(doc, name, sub, required.has(name), depth, seen)),
      ),
    );
  }
  const choice = options(doc, schema);
  if (choice && choice.real.some((o) => hasStructure(doc, o)) && (choice.real.length > 1 || hasProperties(schema))) {
    const disc = schema.discriminator && schema.discriminator.propertyName;
    parts.push(
      h("p", { class: "st-note" }, `${choice.kind === "one of" ? "Exactly one" : "At least one"} of these ${choice.real.length} schemas`,
        disc ? [", chosen by ", h("code", {}, disc)] : null, ":"),
      h("ol", { class: "st-options" }, choice.real.map((option, i) => h("li", {}, optionFold(doc, option, i, depth, seen)))),
    );
  }
  if (schema.items && hasStructure(doc, schema.items)) {
    const item = view(doc, schema.items);
    if ([...item.refs].some((r) => seen.has(r))) parts.push(again(item.name));
    else {
      const inner = children(doc, item, depth + 1, seen);
      parts.push(h("p", { class: "st-note" }, `Each item${item.name ? ` (${item.name})` : ""}:`), description(item.schema), inner);
    }
  }
  const extra = schema.additionalProperties;
  if (extra && typeof extra === "object" && hasStructure(doc, extra)) {
    parts.push(h("p", { class: "st-note" }, "Each other property's value:"), children(doc, view(doc, extra), depth + 1, seen));
  }
  const shown = parts.filter(Boolean);
  return shown.length ? h("div", { class: "st-children" }, shown) : null;
}

const again = (name) => h("p", { class: "st-note" }, `${name || "This schema"} again (it contains itself; see above).`);

function optionFold(doc, option, i, depth, seen) {
  const v = view(doc, option);
  const title = v.schema.title || v.name || `Option ${i + 1}`;
  // The option is a fold already: what it holds opens as the top level's does.
  const inner = [...v.refs].some((r) => seen.has(r)) ? again(v.name) : children(doc, v, depth, seen);
  return fold(
    [h("span", { class: "st-type" }, title), v.schema.description ? h("span", { class: "st-hint" }, ` — ${v.schema.description.split("\n")[0]}`) : null],
    [limitsLine(v.schema), inner],
    false,
  );
}

function property(doc, name, node, required, depth, ancestors) {
  const v = view(doc, node);
  const { schema } = v;
  const items = schema.items ? view(doc, schema.items).schema : null;
  const li = h("li", { class: `st-prop${required ? " required" : ""}`, dataset: { name } },
    h("div", { class: "st-line" },
      h("code", { class: "st-name" }, name),
      h("span", { class: "st-type" }, typeText(doc, node)),
      required ? h("span", { class: "st-req" }, "required") : null,
    ),
    description(schema),
    limitsLine(schema),
    items && !hasStructure(doc, schema.items) ? limitsLine(items, "each item: ") : null,
  );
  if (hasStructure(doc, node)) {
    const nested = [...v.refs].some((r) => ancestors.has(r)) ? again(v.name) : children(doc, v, depth + 1, ancestors);
    if (nested) li.append(fold(h("span", { class: "st-hint" }, `${v.name || name}: ${countText(doc, v)}`), nested, depth === 0));
  }
  return li;
}

function countText(doc, v) {
  let { schema } = v;
  if (schema.items) schema = view(doc, schema.items).schema;
  const choice = options(doc, schema);
  if (hasProperties(schema)) return plural(Object.keys(schema.properties).length, "property", "properties");
  if (choice) return `${choice.kind} ${choice.real.length} schemas`;
  return "details";
}

/** The tree for `schema` (a request body's, a response's): its type line, then what it holds. */
export function schemaTree(doc, schema) {
  const v = view(doc, schema);
  return h("div", { class: "schema-tree" },
    h("p", { class: "st-line st-root" }, h("span", { class: "st-type" }, typeText(doc, schema))),
    description(v.schema),
    limitsLine(v.schema),
    children(doc, v, 0, new Set()),
  );
}
