// Reading the served OpenAPI document: operations, $ref resolution, example payloads built
// from schemas, and a small JSON Schema checker for responses. No dependencies on purpose:
// the console must work with nothing but the server (no CDN, no build step).

export const HTTP_METHODS = ["get", "post", "put", "patch", "delete", "head", "options"];

/** Follow a local "#/a/b" reference inside `doc`; returns undefined when it does not resolve. */
export function resolvePointer(doc, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return undefined;
  let node = doc;
  for (const raw of ref.slice(1).split("/").filter(Boolean)) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node == null || typeof node !== "object") return undefined;
    node = node[key];
  }
  return node;
}

/** Resolve `$ref` chains at the top of `node` (not deeply; callers recurse as they walk). */
export function deref(doc, node, seen = new Set()) {
  while (node && typeof node === "object" && typeof node.$ref === "string") {
    if (seen.has(node.$ref)) return {}; // a cycle: give up quietly rather than loop forever
    seen.add(node.$ref);
    node = resolvePointer(doc, node.$ref);
  }
  return node;
}

/** Every operation of the document, in document order, with its merged parameters. */
export function listOperations(doc) {
  const ops = [];
  for (const [path, item] of Object.entries(doc?.paths || {})) {
    const pathItem = deref(doc, item) || {};
    for (const method of HTTP_METHODS) {
      const op = pathItem[method];
      if (!op || typeof op !== "object") continue;
      // Operation-level parameters override path-level ones with the same name and location.
      const params = new Map();
      for (const p of [...(pathItem.parameters || []), ...(op.parameters || [])]) {
        const param = deref(doc, p);
        if (param && param.name) params.set(`${param.in}:${param.name}`, param);
      }
      ops.push({
        key: `${method} ${path}`,
        method,
        path,
        summary: op.summary || op.description || "",
        operationId: op.operationId || "",
        operation: op,
        parameters: [...params.values()],
        documentedMethods: HTTP_METHODS.filter((m) => pathItem[m]),
      });
    }
  }
  return ops;
}

/** The JSON schema of an operation's request body, or null when it takes none. */
export function requestSchema(doc, op) {
  const body = requestBodyOf(doc, op);
  return body ? body.schema : null;
}

/** An operation's request body as {required, description, mediaType, schema}, or null. */
export function requestBodyOf(doc, op) {
  const body = deref(doc, op.operation.requestBody);
  const content = body && body.content;
  if (!content) return null;
  const mediaType = "application/json" in content ? "application/json" : Object.keys(content)[0];
  const media = content[mediaType];
  if (!media || !media.schema) return null;
  return { required: body.required === true, description: body.description || "", mediaType, schema: media.schema };
}

// Responses in the order of their status: 200 … 404, "4XX" after the 4xx codes, default last.
const statusOrder = (key) => (/^\d{3}$/.test(key) ? Number(key) : /^\dXX$/i.test(key) ? Number(key[0]) * 100 + 99.5 : 1000);

/**
 * The responses documented for an operation, by status: [{status, description,
 * headers: [{name, description, schema}], content: [{mediaType, schema, example}]}].
 */
export function documentedResponses(doc, op) {
  const entries = Object.entries(op.operation.responses || {}).sort(([a], [b]) => statusOrder(a) - statusOrder(b));
  return entries.map(([status, raw]) => {
    const response = deref(doc, raw) || {};
    const headers = Object.entries(response.headers || {}).map(([name, h]) => {
      const header = deref(doc, h) || {};
      return { name, description: header.description || "", schema: header.schema };
    });
    const content = Object.entries(response.content || {}).map(([mediaType, media]) => {
      const m = media || {};
      const named = m.examples && Object.values(m.examples).map((e) => deref(doc, e) || {}).find((e) => e.value !== undefined);
      // Only JSON is made up from its schema: a stream's example would not be what arrives.
      const json = /[/+]json$/.test(mediaType.split(";")[0].trim());
      const made = json && m.schema ? exampleFor(doc, m.schema, "", 0, true) : undefined;
      const example = m.example !== undefined ? m.example : named ? named.value : made;
      return { mediaType, schema: m.schema, example };
    });
    return { status, description: response.description || "", headers, content };
  });
}

/** Which key of the operation's responses documents `status` (exact, "4XX" style, default). */
export function responseKeyFor(op, status) {
  const responses = op.operation.responses || {};
  const code = String(status);
  return [code, `${code[0]}XX`, `${code[0]}xx`, "default"].find((key) => responses[key] != null);
}

/** The response object documented for `status`, or undefined. */
export function responseFor(doc, op, status) {
  const key = responseKeyFor(op, status);
  return key === undefined ? undefined : deref(doc, op.operation.responses[key]) || {};
}

// Plausible values for common property names, so the prefilled payload reads like a real call
// and the embedded model gets a sensible prompt instead of the word "string".
const NAME_HINTS = {
  userId: "console-user",
  message: "Hello! In one sentence, what can you help me with?",
  text: "GPT Actions let a custom GPT call an HTTP API described by an OpenAPI document.",
  description: "reverse a string",
  language: "python",
  action: "summarize",
  question: "What is the capital of France?",
  context: "Paris is the capital and largest city of France.",
  code: "def add(a, b):\n    return a + b",
  tone: "friendly",
  targetLanguage: "French",
  sourceLanguage: "English",
};
// Whole values for names whose items alone would not make a sensible example.
const VALUE_HINTS = {
  labels: ["question", "complaint", "praise"],
  fields: { name: "string", year: "integer" },
};

function stringExample(schema, name) {
  if (schema.format === "date-time") return new Date().toISOString();
  if (schema.format === "date") return new Date().toISOString().slice(0, 10);
  if (schema.format === "uuid") return "3fa85f64-5717-4562-b3fc-2c963f66afa6";
  if (schema.format === "email") return "user@example.com";
  if (schema.format === "uri" || schema.format === "url") return "https://example.com";
  let value = NAME_HINTS[name] ?? "string";
  if (schema.maxLength !== undefined && value.length > schema.maxLength) {
    value = value.slice(0, schema.maxLength);
  }
  if (schema.minLength !== undefined && value.length < schema.minLength) {
    value = value.padEnd(schema.minLength, "x");
  }
  return value;
}

function numberExample(schema) {
  let n = schema.type === "integer" ? 1 : 0.5;
  if (schema.minimum !== undefined && n < schema.minimum) n = schema.minimum;
  if (schema.exclusiveMinimum !== undefined && typeof schema.exclusiveMinimum === "number") {
    n = Math.max(n, schema.exclusiveMinimum + (schema.type === "integer" ? 1 : 0.5));
  }
  if (schema.maximum !== undefined && n > schema.maximum) n = schema.maximum;
  return n;
}

function schemaType(schema) {
  if (Array.isArray(schema.type)) return schema.type.find((t) => t !== "null") || "null";
  if (schema.type) return schema.type;
  if (schema.properties || schema.additionalProperties) return "object";
  if (schema.items) return "array";
  return undefined;
}

/**
 * A value valid against `schema`: explicit examples and defaults win, then enums and
 * consts; oneOf/anyOf take their first option (setting the discriminator to match);
 * objects get their required properties (optional ones only when they carry an example,
 * or every one with `all`, as an example of a response shows them).
 */
export function exampleFor(doc, schemaIn, name = "", depth = 0, all = false) {
  const schema = deref(doc, schemaIn) || {};
  if (depth > 8) return null;
  if (schema.example !== undefined) return schema.example;
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if (schema.const !== undefined) return schema.const;
  if (schema.default !== undefined && schema.default !== null) return schema.default;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const choice = schema.oneOf || schema.anyOf;
  if (Array.isArray(choice) && choice.length) {
    const value = exampleFor(doc, choice[0], name, depth + 1, all);
    const disc = schema.discriminator;
    if (disc && disc.propertyName && value && typeof value === "object") {
      // Prefer the mapping key that points at the first option; else the ref's last segment.
      const ref = choice[0].$ref || "";
      const mapped = Object.entries(disc.mapping || {}).find(([, target]) => target === ref);
      value[disc.propertyName] = mapped ? mapped[0] : ref.split("/").pop() || value[disc.propertyName];
    }
    return value;
  }
  if (Array.isArray(schema.allOf)) {
    const merged = {};
    for (const part of schema.allOf) {
      const v = exampleFor(doc, part, name, depth + 1, all);
      if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(merged, v);
    }
    return merged;
  }
  if (VALUE_HINTS[name] !== undefined && validate(doc, schema, VALUE_HINTS[name]).length === 0) {
    return structuredClone(VALUE_HINTS[name]);
  }
  switch (schemaType(schema)) {
    case "object": {
      const out = {};
      const required = new Set(schema.required || []);
      for (const [prop, sub] of Object.entries(schema.properties || {})) {
        const resolved = deref(doc, sub) || {};
        if (all || required.has(prop) || resolved.example !== undefined) {
          out[prop] = exampleFor(doc, sub, all ? "" : prop, depth + 1, all); // a response shows types, not hints
        }
      }
      return out;
    }
    case "array": {
      const count = Math.max(1, schema.minItems || 0);
      return Array.from({ length: count }, () => exampleFor(doc, schema.items || {}, name, depth + 1, all));
    }
    case "string":
      return stringExample(schema, name);
    case "integer":
    case "number":
      return numberExample(schema);
    case "boolean":
      return true;
    case "null":
      return null;
    default:
      return NAME_HINTS[name] ?? {};
  }
}

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(expected, actual) {
  return expected === actual || (expected === "number" && actual === "integer");
}

const characters = (n) => `${n} character${n === 1 ? "" : "s"}`;
const tooShort = (n) => (n === 1 ? "must not be empty" : `must be at least ${characters(n)} long`);
// A pattern that a blank value breaks and a letter does not is said as "must not be blank" (the
// server's document spells its whitespace out as a class; String.trim has the same set); any
// other is quoted as it is.
function patternWords(pattern, value) {
  if (value.trim() === "" && new RegExp(pattern, "u").test("a")) return "must not be blank";
  return `does not have the form the document asks for (the pattern ${pattern})`;
}

const escapePointer = (key) => String(key).replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * Check `value` against an OpenAPI (3.0 or 3.1) schema; returns [{pointer, message}].
 * Covers what a response check needs: types, nullable, required, properties,
 * additionalProperties, items, enum/const, the combinators, and the usual bounds.
 */
export function validate(doc, schemaIn, value, pointer = "", depth = 0) {
  const schema = deref(doc, schemaIn);
  const problems = [];
  if (!schema || typeof schema !== "object" || depth > 32) return problems;
  const add = (message, at = pointer) => problems.push({ pointer: at || "/", message });
  const actual = typeOf(value);

  if (value === null && (schema.nullable === true || (Array.isArray(schema.type) && schema.type.includes("null")))) {
    return problems;
  }
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => typeMatches(t, actual))) {
      add(`expected ${types.join(" or ")}, got ${actual}`);
      return problems; // further checks on a wrong type only add noise
    }
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    add(`expected the constant ${JSON.stringify(schema.const)}`);
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    add(`${JSON.stringify(value)} is not one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
  }
  for (const part of schema.allOf || []) problems.push(...validate(doc, part, value, pointer, depth + 1));
  for (const [kw, want] of [["oneOf", "exactly one"], ["anyOf", "at least one"]]) {
    if (!Array.isArray(schema[kw])) continue;
    // The option the value names (its `action`, say) is the one to check it against, as the
    // server does: its problems say which fields are wrong, where "matches 0 of 9" would not.
    const named = namedOption(doc, schema, schema[kw], value);
    if (named) {
      problems.push(...validate(doc, named, value, pointer, depth + 1));
      continue;
    }
    const passing = schema[kw].filter((s) => validate(doc, s, value, pointer, depth + 1).length === 0).length;
    if (kw === "oneOf" ? passing !== 1 : passing === 0) {
      add(`matches ${passing} of the ${schema[kw].length} ${kw} options, expected ${want}`);
    }
  }
  if (actual === "object") {
    for (const req of schema.required || []) {
      if (!(req in value)) add(`missing required property "${req}"`, `${pointer}/${escapePointer(req)}`);
    }
    const props = schema.properties || {};
    for (const [key, sub] of Object.entries(value)) {
      const at = `${pointer}/${escapePointer(key)}`;
      if (key in props) problems.push(...validate(doc, props[key], sub, at, depth + 1));
      else if (schema.additionalProperties === false) add(`unexpected property "${key}"`, at);
      else if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        problems.push(...validate(doc, schema.additionalProperties, sub, at, depth + 1));
      }
    }
  }
  if (actual === "array") {
    if (schema.items) value.forEach((item, i) => problems.push(...validate(doc, schema.items, item, `${pointer}/${i}`, depth + 1)));
    if (schema.minItems !== undefined && value.length < schema.minItems) add(`has ${value.length} items, fewer than ${schema.minItems}`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) add(`has ${value.length} items, more than ${schema.maxItems}`);
  }
  if (actual === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) add(tooShort(schema.minLength));
    if (schema.maxLength !== undefined && value.length > schema.maxLength) add(`must be at most ${characters(schema.maxLength)} long`);
    if (schema.pattern && !(value.length === 0 && schema.minLength > 0)) {
      try {
        if (!new RegExp(schema.pattern, "u").test(value)) add(patternWords(schema.pattern, value));
      } catch {
        /* a pattern JavaScript cannot compile is the document's problem, not the response's */
      }
    }
    if (schema.format === "date-time" && Number.isNaN(Date.parse(value))) add("is not a date-time");
  }
  if (actual === "integer" || actual === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) add(`less than the minimum ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) add(`greater than the maximum ${schema.maximum}`);
  }
  return problems;
}

/** The single value `option` fixes its property `name` to (by const, or an enum of one). */
function fixedValue(doc, option, name) {
  const prop = deref(doc, ((deref(doc, option) || {}).properties || {})[name]) || {};
  if (prop.const !== undefined) return [prop.const];
  return Array.isArray(prop.enum) && prop.enum.length === 1 ? prop.enum : undefined;
}

/**
 * The option of a oneOf/anyOf that an object value names by its discriminating property: the
 * schema's `discriminator`, else a property every option fixes to one value of its own. Undefined
 * when the value names none.
 */
function namedOption(doc, schema, options, value) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return undefined;
  let name = schema.discriminator && schema.discriminator.propertyName;
  if (!name) {
    const first = deref(doc, options[0]) || {};
    name = Object.keys(first.properties || {}).find((p) => options.every((o) => fixedValue(doc, o, p)));
  }
  if (!name || !(name in value)) return undefined;
  const mapped = schema.discriminator && schema.discriminator.mapping && schema.discriminator.mapping[value[name]];
  return options.find((o) => (mapped && o.$ref === mapped) || (fixedValue(doc, o, name) || [])[0] === value[name]);
}

/**
 * Compare a stream's events with the event schema documented for `status` (text/event-stream):
 * each event's name must be one the document lists. Returns what checkResponse returns.
 */
export function checkEvents(doc, op, status, events) {
  const response = responseFor(doc, op, status);
  const media = response && response.content && response.content["text/event-stream"];
  const schema = media && deref(doc, media.schema);
  const names = schema && schema.properties && (deref(doc, schema.properties.event) || {}).enum;
  if (!Array.isArray(names)) return { checked: false, note: `No event schema documented for status ${status}.`, problems: [] };
  const problems = events
    .map((e, i) => ({ e, i }))
    .filter(({ e }) => !names.includes(e.event))
    .map(({ e, i }) => ({ pointer: `/events/${i}`, message: `event ${JSON.stringify(e.event)} is not one of ${names.join(", ")}` }));
  return { checked: true, note: "", problems };
}

/**
 * Compare a response with what the document promises for this operation. Returns
 * {checked: bool, note: string, problems: [{pointer, message}]}.
 */
export function checkResponse(doc, op, status, contentType, body) {
  const response = responseFor(doc, op, status);
  if (response === undefined) {
    return { checked: true, note: "", problems: [{ pointer: "/", message: `status ${status} is not documented for ${op.method.toUpperCase()} ${op.path}` }] };
  }
  const content = response.content || {};
  const media = content["application/json"] || (contentType && content[contentType.split(";")[0].trim()]);
  if (!media || !media.schema) {
    return { checked: false, note: `No schema documented for status ${status}.`, problems: [] };
  }
  if (body === undefined) {
    return { checked: true, note: "", problems: [{ pointer: "/", message: "the body is not JSON, the document promises JSON" }] };
  }
  return { checked: true, note: "", problems: validate(doc, media.schema, body) };
}
