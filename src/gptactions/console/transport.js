// Sending a request and reading its answer (JSON or a text/event-stream), turning failures
// into sentences, and writing the same request as curl / Python / fetch snippets.

/** Split a text/event-stream into events; returns [events, unfinished remainder]. */
export function parseSse(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n/g, "\n").split("\n\n");
  const rest = blocks.pop(); // the last block may still be arriving
  for (const block of blocks) {
    let event = "message";
    const data = [];
    for (const raw of block.split("\n")) {
      if (!raw || raw.startsWith(":")) continue; // comments keep the connection alive
      const idx = raw.indexOf(":");
      const field = idx === -1 ? raw : raw.slice(0, idx);
      const value = idx === -1 ? "" : raw.slice(idx + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length && event === "message") continue;
    const text = data.join("\n");
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    events.push({ event, data: parsed });
  }
  return [events, rest];
}

/** The text a streamed event adds to the reply: a `token` event's (this API's streams), or the
 * delta of an OpenAI chunk (`data: {"choices": [{"delta": {"content": …}}]}`); null for others. */
export function streamedText(ev) {
  const data = ev.data;
  if (ev.event === "token") return data && typeof data.text === "string" ? data.text : null;
  if (ev.event !== "message" || !data || typeof data !== "object" || !Array.isArray(data.choices)) return null;
  const choice = data.choices[0] || {};
  const text = choice.delta ? choice.delta.content : choice.text;
  return typeof text === "string" ? text : "";
}

/** OpenAI's streams end with `data: [DONE]`, not with a `done` event. */
export const isDoneMarker = (ev) => ev.event === "message" && ev.data === "[DONE]";

/** The event that ended a stream in failure: an `error` event, or an OpenAI chunk that is an error. */
export const streamFailure = (events) =>
  events.find((e) => e.event === "error" || (e.event === "message" && e.data && typeof e.data === "object" && e.data.error && !e.data.choices));

/**
 * Why the browser would refuse to send this request at all, or "": a header value it cannot
 * encode (a character past U+00FF), or another server this page's security policy does not let
 * it reach (`connect-src 'self' https:`). Said before sending, since fetch only says "Failed".
 */
export function refusedBeforeSending(url, headers) {
  for (const [name, value] of Object.entries(headers || {})) {
    const at = [...String(value)].findIndex((c) => c.codePointAt(0) > 0xff);
    if (at !== -1) return { kind: "header", header: name, character: [...String(value)][at] };
  }
  let target;
  try {
    target = new URL(url, location.href);
  } catch {
    return "";
  }
  if (target.origin !== location.origin && target.protocol !== "https:") return { kind: "policy", origin: target.origin };
  return "";
}

/** `networkError` of a request the user cancelled (Cancel, Esc) before its answer came; one
 * cancelled while its body was arriving (a stream) has its status and `cancelled` instead. */
export const CANCELLED = "cancelled";

/**
 * Send one request. Never throws: a network failure comes back as {networkError}, and a request
 * the browser would refuse as {networkError, refused} (see refusedBeforeSending).
 * `onEvent` is called for each server-sent event as it arrives.
 */
export async function sendRequest({ url, method, headers, body, onEvent, signal }) {
  const started = performance.now();
  const refused = refusedBeforeSending(url, headers);
  if (refused) return { networkError: "not sent", refused, ms: 0, events: [], headers: [] };
  let response;
  try {
    response = await fetch(url, { method, headers, body, signal, cache: "no-store" });
  } catch (err) {
    const networkError = signal && signal.aborted ? CANCELLED : String(err && err.message ? err.message : err);
    return { networkError, ms: performance.now() - started, events: [], headers: [] };
  }
  const firstByteMs = performance.now() - started;
  const contentType = response.headers.get("content-type") || "";
  const result = {
    status: response.status,
    statusText: response.statusText,
    headers: [...response.headers.entries()],
    contentType,
    firstByteMs,
    events: [],
  };
  const isStream = contentType.startsWith("text/event-stream") && response.body;
  if (isStream) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const chunk = decoder.decode(value, { stream: true });
        text += chunk;
        const [events, rest] = parseSse(buffer + chunk);
        buffer = rest;
        for (const ev of events) {
          result.events.push(ev);
          if (onEvent) onEvent(ev);
        }
      }
      const [events] = parseSse(buffer + "\n\n");
      for (const ev of events) {
        result.events.push(ev);
        if (onEvent) onEvent(ev);
      }
    } catch (err) {
      // Cancel (or Esc) aborts the read: what arrived is the answer so far, not a broken stream.
      if (signal && signal.aborted) result.cancelled = true;
      else result.streamError = String(err && err.message ? err.message : err);
    }
    result.text = text;
  } else {
    try {
      result.text = await response.text();
    } catch (err) {
      result.text = "";
      if (signal && signal.aborted) result.cancelled = true;
      else result.streamError = String(err && err.message ? err.message : err);
    }
  }
  result.ms = performance.now() - started;
  result.size = new TextEncoder().encode(result.text).length;
  if (!isStream && result.text) {
    try {
      result.json = JSON.parse(result.text);
    } catch {
      result.json = undefined;
    }
  }
  return result;
}


const STATUS_HINTS = {
  400: "The server rejected the request. Fix what is listed above and send again.",
  401: "Paste a valid key in the API key field at the top of the page.",
  403: "This key is not allowed to do that.",
  404: "Nothing at this path: check the Endpoint and the server.",
  405: "This path exists, but not with this HTTP Method.",
  413: "The payload is larger than the server accepts.",
  415: "Send the payload as application/json.",
  500: "The server failed while handling the request; its log has the details.",
  502: "The model backend failed to answer.",
  503: "The server is busy or not ready; try again in a moment.",
  504: "The model took too long to answer.",
};

/** A readable account of a failed call: {title, message, details: [{pointer, message}], hint}. */
export function describeFailure(result, method, url) {
  if (result.networkError === CANCELLED || result.cancelled) {
    const partial = result.cancelled && result.text;
    return {
      title: "Cancelled",
      message: partial ? `${method} ${url} was cancelled; what arrived is shown below.` : `${method} ${url} was cancelled before its answer arrived.`,
      details: [],
      hint: result.cancelled
        ? "The server stops there and keeps what it had generated, as a cancelled interaction in Logs."
        : "The server may still have handled it: a conversation's reply is in Logs once it has.",
    };
  }
  if (result.refused && result.refused.kind === "header") {
    const c = result.refused.character;
    const code = `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
    return {
      title: "Not sent: the browser cannot send this header",
      message: `The ${result.refused.header} header holds “${c}” (${code}): HTTP headers carry Latin-1 characters only, so ${method} ${url} was never sent.`,
      details: [],
      hint: result.refused.header.toLowerCase() === "authorization"
        ? "API keys are plain ASCII (gpta_…): paste the key again, without the character above."
        : "Take the character out of that header.",
    };
  }
  if (result.refused && result.refused.kind === "policy") {
    return {
      title: "Blocked by this page's security policy",
      message: `${method} ${url} was not sent: this console may call its own server (${location.origin}) and https servers only, and ${result.refused.origin} is neither.`,
      details: [],
      hint: "Serve that server over https (GPTACTIONS_PUBLIC_URL), or open the console it serves itself at its own address.",
    };
  }
  if (result.networkError) {
    return {
      title: "Could not reach the server",
      message: `${method} ${url} got no answer (${result.networkError}).`,
      details: [],
      hint: "Is the server running at that address? A server on another origin must also allow this page through CORS.",
    };
  }
  const err = result.json && typeof result.json === "object" ? result.json.error : undefined;
  const plain = !err && result.text ? result.text.slice(0, 500) : "";
  return {
    title: `${result.status} ${result.statusText || ""}`.trim(),
    message: err ? err.message || err.code || "" : plain || "The server sent no explanation.",
    code: err ? err.code : undefined,
    details: err && Array.isArray(err.details) ? err.details : [],
    hint: hintFor(result.status, err),
  };
}

/** The status's hint; a 404 in the API's error shape that is not about the path names a
 * missing thing (a model, a conversation) on a path that exists: the hint is about that thing. */
function hintFor(status, err) {
  if (status === 404 && err && typeof err.message === "string" && !err.message.startsWith("no such path")) {
    if (err.code === "model_not_found" || err.param === "model") {
      return "No model has that id: use one GET /v1/models lists (the message names them).";
    }
    if (/\bconversation\b/i.test(err.message) || err.param === "conversationId") {
      return "Check the conversationId: a conversation belongs to one userId, and it must be that user's.";
    }
    return "The path exists, but not what the request names: check the ids in its path, parameters and payload.";
  }
  return STATUS_HINTS[status] || (status >= 500 ? "The server failed; try again or read its log." : "");
}

const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

function pyLiteral(value, indent = 0) {
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => pad + pyLiteral(v, indent + 4)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)}`).join(",\n")},\n${end}}`;
}

export const KEY_ENV = "GPTACTIONS_API_KEY";

/**
 * The request as curl, Python (httpx) and JavaScript fetch. With `reveal` false the key is
 * read from the GPTACTIONS_API_KEY environment variable, so a masked snippet still runs.
 */
export function buildSnippets({ url, baseUrl, query, method, headers, bodyText, bodyValue, key, reveal }) {
  const upper = method.toUpperCase();
  const hasBody = bodyText !== undefined && bodyText !== null && bodyText !== "";
  const extra = Object.entries(headers).filter(([name]) => name.toLowerCase() !== "authorization");
  const stream = extra.some(([name, v]) => name.toLowerCase() === "accept" && v.includes("event-stream"));
  const compact = bodyValue !== undefined ? JSON.stringify(bodyValue) : bodyText;

  // curl: double quotes around the auth header only when it must expand the variable.
  const curl = [`curl -sS${stream ? " -N" : ""}${upper === "GET" ? "" : ` -X ${upper}`} ${shellQuote(url)}`];
  if (key || !reveal) {
    curl.push(reveal ? `-H ${shellQuote(`Authorization: Bearer ${key}`)}` : `-H "Authorization: Bearer $${KEY_ENV}"`);
  }
  for (const [name, value] of extra) curl.push(`-H ${shellQuote(`${name}: ${value}`)}`);
  if (hasBody) curl.push(`--data-raw ${shellQuote(compact)}`);

  const pyArgs = [`    ${JSON.stringify(baseUrl)},`];
  const pyHeaders = [];
  if (key || !reveal) {
    pyHeaders.push(reveal ? `"Authorization": ${JSON.stringify(`Bearer ${key}`)}` : `"Authorization": f"Bearer {os.environ['${KEY_ENV}']}"`);
  }
  for (const [name, value] of extra) pyHeaders.push(`${JSON.stringify(name)}: ${JSON.stringify(value)}`);
  if (query.length) pyArgs.push(`    params=${pyLiteral(Object.fromEntries(query), 4)},`);
  if (pyHeaders.length) pyArgs.push(`    headers={${pyHeaders.join(", ")}},`);
  if (hasBody) {
    pyArgs.push(bodyValue !== undefined ? `    json=${pyLiteral(bodyValue, 4)},` : `    content=${JSON.stringify(bodyText)},`);
  }
  pyArgs.push("    timeout=120,");
  const imports = `${reveal ? "" : "import os\n\n"}import httpx\n\n`;
  const python = stream
    ? `${imports}with httpx.stream(\n    ${JSON.stringify(upper)},\n${pyArgs.join("\n")}\n) as response:\n    print(response.status_code)\n    for line in response.iter_lines():\n        print(line)\n`
    : `${imports}response = httpx.request(\n    ${JSON.stringify(upper)},\n${pyArgs.join("\n")}\n)\nprint(response.status_code)\nprint(response.json())\n`;

  const jsHeaders = [];
  if (key || !reveal) {
    jsHeaders.push(reveal ? `    "Authorization": ${JSON.stringify(`Bearer ${key}`)},` : "    Authorization: `Bearer ${API_KEY}`,");
  }
  for (const [name, value] of extra) jsHeaders.push(`    ${JSON.stringify(name)}: ${JSON.stringify(value)},`);
  const jsOpts = [`  method: ${JSON.stringify(upper)},`];
  if (jsHeaders.length) jsOpts.push(`  headers: {\n${jsHeaders.join("\n")}\n  },`);
  if (hasBody) {
    jsOpts.push(bodyValue !== undefined ? `  body: JSON.stringify(${JSON.stringify(bodyValue, null, 2).replace(/\n/g, "\n  ")}),` : `  body: ${JSON.stringify(bodyText)},`);
  }
  const read = stream
    ? "const reader = response.body.getReader();\nfor (let r = await reader.read(); !r.done; r = await reader.read()) {\n  console.log(new TextDecoder().decode(r.value));\n}\n"
    : "console.log(response.status, await response.json());\n";
  const fetchJs = `${reveal ? "" : `const API_KEY = process.env.${KEY_ENV}; // or paste your key\n`}const response = await fetch(${JSON.stringify(url)}, {\n${jsOpts.join("\n")}\n});\n${read}`;

  return { curl: curl.join(" \\\n  ") + "\n", python, fetch: fetchJs };
}
