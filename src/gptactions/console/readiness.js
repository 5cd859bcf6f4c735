// "GPT Actions readiness": checks of the served document against what ChatGPT's GPT Actions
// import expects. Each finding names where it is (a JSON pointer) and what to change, so a
// user can fix the document without reading OpenAI's documentation first.

import { HTTP_METHODS, deref } from "./openapi.js";

const SUMMARY_LIMIT = 300;
const PARAMETER_DESCRIPTION_LIMIT = 700;

const esc = (key) => String(key).replace(/~/g, "~0").replace(/\//g, "~1");

/** Walk every schema reachable in the document (inline and under components), once each. */
function eachSchema(doc, visit) {
  const seen = new Set();
  const walk = (node, pointer) => {
    if (!node || typeof node !== "object" || seen.has(node)) return;
    seen.add(node);
    if (node.$ref) return; // the target is visited at its own place under components
    visit(node, pointer);
    for (const [key, sub] of Object.entries(node.properties || {})) walk(sub, `${pointer}/properties/${esc(key)}`);
    if (node.items) walk(node.items, `${pointer}/items`);
    if (node.additionalProperties && typeof node.additionalProperties === "object") {
      walk(node.additionalProperties, `${pointer}/additionalProperties`);
    }
    for (const kw of ["oneOf", "anyOf", "allOf"]) {
      (node[kw] || []).forEach((sub, i) => walk(sub, `${pointer}/${kw}/${i}`));
    }
    if (node.not) walk(node.not, `${pointer}/not`);
  };
  for (const [name, schema] of Object.entries(doc?.components?.schemas || {})) {
    walk(schema, `/components/schemas/${esc(name)}`);
  }
  const walkContent = (content, pointer) => {
    for (const [media, obj] of Object.entries(content || {})) {
      if (obj && obj.schema) walk(obj.schema, `${pointer}/content/${esc(media)}/schema`);
    }
  };
  const components = doc?.components || {};
  for (const [name, resp] of Object.entries(components.responses || {})) walkContent(resp?.content, `/components/responses/${esc(name)}`);
  for (const [name, body] of Object.entries(components.requestBodies || {})) walkContent(body?.content, `/components/requestBodies/${esc(name)}`);
  for (const [name, param] of Object.entries(components.parameters || {})) {
    if (param && param.schema) walk(param.schema, `/components/parameters/${esc(name)}/schema`);
  }
  for (const [path, item] of Object.entries(doc?.paths || {})) {
    for (const method of HTTP_METHODS) {
      const op = item?.[method];
      if (!op) continue;
      const base = `/paths/${esc(path)}/${method}`;
      (op.parameters || []).forEach((p, i) => p && p.schema && walk(p.schema, `${base}/parameters/${i}/schema`));
      if (op.requestBody && !op.requestBody.$ref) walkContent(op.requestBody.content, `${base}/requestBody`);
      for (const [code, resp] of Object.entries(op.responses || {})) {
        if (resp && !resp.$ref) walkContent(resp.content, `${base}/responses/${esc(code)}`);
      }
    }
  }
}

/** The checks, in the order the panel lists them. */
export const RULES = [
  ["operationId", "Every operation has a unique operationId"],
  ["servers", "Exactly one server, with an https URL"],
  ["lengths", "Summaries and descriptions ≤ 300 characters, parameter descriptions ≤ 700"],
  ["properties", "Every object schema lists its properties"],
  ["explode", "No exploded array query parameters"],
  ["consequential", "POST operations state x-openai-isConsequential"],
];

/**
 * Findings for the document: [{rule, level: "error"|"warning", pointer, message, fix}].
 * An empty list means ChatGPT should import the document as it is.
 */
export function checkReadiness(doc) {
  const findings = [];
  const add = (rule, level, pointer, message, fix) => findings.push({ rule, level, pointer, message, fix });

  // One server, reachable over https: ChatGPT calls only one base URL and refuses plain http.
  const servers = Array.isArray(doc?.servers) ? doc.servers : [];
  const https = servers.filter((s) => /^https:\/\//i.test(String(s?.url || "")));
  if (servers.length === 0) {
    add("servers", "error", "/servers", "The document names no server.", "Add one `servers` entry with the public https URL of this API.");
  } else if (https.length === 0) {
    add("servers", "error", "/servers", `No https server URL (found ${servers.map((s) => s.url).join(", ")}).`,
      "ChatGPT only calls https URLs: set the server URL to the public https address (GPTACTIONS_PUBLIC_URL).");
  } else if (servers.length > 1) {
    add("servers", "error", "/servers", `${servers.length} servers are listed; GPT Actions needs exactly one.`,
      `Keep only ${https[0].url} in \`servers\`.`);
  }

  const operationIds = new Map();
  for (const [path, rawItem] of Object.entries(doc?.paths || {})) {
    const item = deref(doc, rawItem) || {};
    for (const method of HTTP_METHODS) {
      const op = item[method];
      if (!op) continue;
      const base = `/paths/${esc(path)}/${method}`;
      const label = `${method.toUpperCase()} ${path}`;
      if (!op.operationId) {
        add("operationId", "error", base, `${label} has no operationId.`, "Give it a unique operationId; ChatGPT names the action's function after it.");
      } else if (operationIds.has(op.operationId)) {
        add("operationId", "error", `${base}/operationId`, `operationId "${op.operationId}" is used by ${operationIds.get(op.operationId)} and ${label}.`,
          "Make every operationId unique.");
      } else {
        operationIds.set(op.operationId, label);
      }
      for (const field of ["summary", "description"]) {
        const text = op[field];
        if (typeof text === "string" && text.length > SUMMARY_LIMIT) {
          add("lengths", "error", `${base}/${field}`, `The ${field} of ${label} is ${text.length} characters long.`,
            `Shorten it to at most ${SUMMARY_LIMIT} characters.`);
        }
      }
      if (method === "post" && !("x-openai-isConsequential" in op)) {
        add("consequential", "warning", base, `${label} does not state x-openai-isConsequential.`,
          "Add `x-openai-isConsequential: false` (or true when every call must be confirmed by the user).");
      }
      const params = [...(item.parameters || []), ...(op.parameters || [])];
      params.forEach((rawParam) => {
        const param = deref(doc, rawParam) || {};
        const at = `${base}/parameters/${esc(param.name || "?")}`;
        if (typeof param.description === "string" && param.description.length > PARAMETER_DESCRIPTION_LIMIT) {
          add("lengths", "error", `${at}/description`, `The description of parameter "${param.name}" is ${param.description.length} characters long.`,
            `Shorten it to at most ${PARAMETER_DESCRIPTION_LIMIT} characters.`);
        }
        const schema = deref(doc, param.schema) || {};
        const isArray = schema.type === "array" || (Array.isArray(schema.type) && schema.type.includes("array"));
        const style = param.style || "form";
        const explode = param.explode ?? style === "form";
        if (param.in === "query" && isArray && explode) {
          add("explode", "error", at, `Query parameter "${param.name}" is an exploded array (?${param.name}=a&${param.name}=b).`,
            "ChatGPT cannot send exploded arrays: set `explode: false` or take a single value.");
        }
      });
    }
  }

  eachSchema(doc, (schema, pointer) => {
    const isObject = schema.type === "object" || (Array.isArray(schema.type) && schema.type.includes("object"));
    if (isObject && !schema.properties && !schema.oneOf && !schema.anyOf && !schema.allOf) {
      add("properties", "error", pointer, "An object schema without `properties`.",
        "List its properties (an empty `properties: {}` with `additionalProperties: true` for free-form objects).");
    }
  });
  return findings;
}
