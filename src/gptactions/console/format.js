// A tiny YAML and JSON emitter that produces lines of coloured tokens, so one pass gives the
// plain text (for copy and download) and the highlighted HTML (with <details> around the
// parts worth collapsing). Written here because the console ships without third-party code.
//
// Node shapes:  {t: "line", indent, toks: [[cls, text], ...]}
//               {t: "group", head: line, body: [nodes], info}   (info comes from groupAt)

const line = (toks, indent = 0) => ({ t: "line", indent, toks });

function shift(nodes, by) {
  for (const n of nodes) {
    if (n.t === "line") n.indent += by;
    else {
      n.head.indent += by;
      shift(n.body, by);
    }
  }
  return nodes;
}

const firstLine = (nodes) => (nodes[0].t === "line" ? nodes[0] : nodes[0].head);
const isCollection = (v) => v !== null && typeof v === "object";
const isEmpty = (v) => (Array.isArray(v) ? v.length === 0 : Object.keys(v).length === 0);

// Strings YAML would read as something else (numbers, booleans, null, dates) or that hold
// indicator characters must be quoted; everything else stays plain, as people write YAML.
const YAML_SPECIAL = /^(?:true|false|yes|no|on|off|y|n|null|~|[-+]?(?:\.?\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?|\.inf|\.nan|0x[0-9a-f]+|0o[0-7]+)|\d{4}-\d\d-\d\d.*)$/i;

// Characters YAML treats as line breaks or will not take raw (JSON leaves some of them as is).
const YAML_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/;
const YAML_UNSAFE_ALL = /[\u007f-\u009f\u2028\u2029\ufeff]/g;

function yamlString(s) {
  const plain =
    s.length > 0 &&
    s.trim() === s &&
    !/^[-?:,[\]{}#&*!|>'"%@`]/.test(s) &&
    !/: |\s#|:$/.test(s) &&
    !YAML_UNSAFE.test(s) &&
    !YAML_SPECIAL.test(s);
  if (plain) return s;
  if (!s.includes("'") && !YAML_UNSAFE.test(s)) return `'${s}'`;
  // JSON's double-quoted form is valid YAML once the characters JSON leaves raw are escaped.
  return JSON.stringify(s).replace(YAML_UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function yamlScalar(v) {
  if (v === null || v === undefined) return ["null", "null"];
  if (typeof v === "boolean") return ["bool", String(v)];
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return ["num", Number.isNaN(v) ? ".nan" : v > 0 ? ".inf" : "-.inf"];
    // YAML 1.1 readers (PyYAML) only take exponents with a dot in the mantissa: 1.0e+21.
    return ["num", String(v).replace(/^(-?\d+)e/, "$1.0e")];
  }
  if (Array.isArray(v)) return ["punct", "[]"];
  if (typeof v === "object") return ["punct", "{}"];
  return ["str", yamlString(String(v))];
}

// Multi-line text (long descriptions) reads far better as a literal block than as "\n" escapes.
const isBlockText = (v) =>
  typeof v === "string" && v.includes("\n") && !/\r|[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\ufeff]/.test(v) && !/^\s/.test(v) && !/[ \t]\n|[ \t]$/.test(v);

function blockLines(s) {
  const chomp = s.endsWith("\n\n") ? "+" : s.endsWith("\n") ? "" : "-";
  const body = (s.endsWith("\n") ? s.replace(/\n+$/, (m) => (chomp === "+" ? m.slice(1) : "")) : s).split("\n");
  return { indicator: `|${chomp}`, lines: body.map((text) => line(text ? [["str", text]] : [], 2)) };
}

/** YAML nodes for `value`; `groupAt(path)` returns info for paths that become <details>. */
export function yamlNodes(value, groupAt = () => null, path = []) {
  if (!isCollection(value) || isEmpty(value)) {
    if (isBlockText(value)) {
      const b = blockLines(value);
      return [line([["punct", b.indicator]]), ...shift(b.lines, -2)];
    }
    return [line([yamlScalar(value)])];
  }
  const out = [];
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (isBlockText(item)) {
        const b = blockLines(item);
        out.push(line([["punct", "- "], ["punct", b.indicator]]), ...b.lines);
      } else if (!isCollection(item) || isEmpty(item)) {
        out.push(line([["punct", "- "], yamlScalar(item)]));
      } else {
        const child = shift(yamlNodes(item, groupAt, [...path, i]), 2);
        const first = firstLine(child);
        first.indent -= 2;
        first.toks.unshift(["punct", "- "]);
        out.push(...child);
      }
    });
    return out;
  }
  for (const [key, v] of Object.entries(value)) {
    const childPath = [...path, key];
    const keyToks = [["key", yamlString(key)], ["punct", ":"]];
    let head;
    let body = [];
    if (isBlockText(v)) {
      const b = blockLines(v);
      head = line([...keyToks, ["punct", " " + b.indicator]]);
      body = b.lines;
    } else if (!isCollection(v) || isEmpty(v)) {
      head = line([...keyToks, ["punct", " "], yamlScalar(v)]);
    } else {
      head = line(keyToks);
      body = shift(yamlNodes(v, groupAt, childPath), 2);
    }
    const info = body.length ? groupAt(childPath, v) : null;
    if (info) out.push({ t: "group", head, body, info });
    else out.push(head, ...body);
  }
  return out;
}

function jsonScalar(v) {
  if (v === null || v === undefined) return ["null", "null"];
  if (typeof v === "boolean") return ["bool", String(v)];
  if (typeof v === "number") return ["num", String(v)];
  return ["str", JSON.stringify(v)];
}

/** JSON nodes for `value`, two-space indented like JSON.stringify(value, null, 2). */
export function jsonNodes(value, groupAt = () => null, path = [], keyToks = [], comma = false) {
  const tail = comma ? [["punct", ","]] : [];
  if (!isCollection(value) || isEmpty(value)) {
    const tok = isCollection(value) ? ["punct", Array.isArray(value) ? "[]" : "{}"] : jsonScalar(value);
    return [line([...keyToks, tok, ...tail])];
  }
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const body = [];
  entries.forEach(([k, v], i) => {
    const kt = Array.isArray(value) ? [] : [["key", JSON.stringify(k)], ["punct", ": "]];
    body.push(...shift(jsonNodes(v, groupAt, [...path, k], kt, i < entries.length - 1), 2));
  });
  body.push(line([["punct", close], ...tail]));
  const head = line([...keyToks, ["punct", open]]);
  const info = path.length ? groupAt(path, value) : null;
  return info ? [{ t: "group", head, body, info }] : [head, ...body];
}

const lineText = (l) => " ".repeat(Math.max(0, l.indent)) + l.toks.map((t) => t[1]).join("");

/** The plain text of nodes, one line per line node. */
export function nodesToText(nodes) {
  const out = [];
  const walk = (list) => {
    for (const n of list) {
      if (n.t === "line") out.push(lineText(n));
      else {
        out.push(lineText(n.head));
        walk(n.body);
      }
    }
  };
  walk(nodes);
  return out.join("\n") + "\n";
}

export const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const tokHtml = ([cls, text]) => (cls ? `<span class="t-${cls}">${escapeHtml(text)}</span>` : escapeHtml(text));

/**
 * A line's tokens split in two: its start (leading "- ", "}," and the like, then a key and its
 * colon) and the rest. The start never breaks, so a key is never cut mid-word; the rest (a
 * value) may wrap.
 */
function splitLead(toks) {
  let at = 0;
  while (at < toks.length && toks[at][0] === "punct") at += 1;
  const colon = toks[at + 1];
  if (!toks[at] || toks[at][0] !== "key" || !colon || colon[0] !== "punct" || !colon[1].startsWith(":")) {
    return [toks.slice(0, at), toks.slice(at)];
  }
  // JSON's ": " is one token: the colon stays with its key, the space is where the value may wrap.
  const space = colon[1].slice(1);
  return [[...toks.slice(0, at + 1), ["punct", ":"]], [...(space ? [["punct", space]] : []), ...toks.slice(at + 2)]];
}

// A fold's head line carries its disclosure triangle in the last two columns of its
// indentation, so the triangle sits next to the key it folds (top-level ones use the gutter).
// data-i is the indentation, so a long line can wrap under its own start (see hangIndents);
// the indentation is a span of its own so that narrow screens can draw it narrower (the
// spaces stay in the text, for whoever selects and copies it).
function lineHtml(l, fold = false) {
  const indent = Math.max(0, l.indent);
  const [lead, rest] = splitLead(l.toks);
  const inside = fold && indent >= 2;
  const spaces = inside ? indent - 2 : indent;
  const tw = fold ? `<span class="tw${inside ? "" : " out"}" aria-hidden="true"></span>` : "";
  const start = `${spaces ? `<span class="ind">${" ".repeat(spaces)}</span>` : ""}${tw}${lead.map(tokHtml).join("")}`;
  const open = indent ? `<span class="ln" data-i="${indent}">` : `<span class="ln">`;
  return `${open}${start ? `<span class="lead">${start}</span>` : ""}${rest.map(tokHtml).join("")}</span>`;
}

/**
 * Give each line of nodesToHtml's output under `root` its indentation as the CSS variable --i,
 * so a line too long for the view wraps under its own start instead of at the left edge. Set
 * from script because the page's policy refuses style attributes in markup.
 */
export function hangIndents(root) {
  for (const ln of root.querySelectorAll(".ln[data-i]")) ln.style.setProperty("--i", ln.dataset.i);
}

/**
 * HTML for nodes. `decorate(info)` returns extra HTML for a group's summary (hints,
 * buttons) and its open state; groups become <details> so the browser does the folding.
 */
export function nodesToHtml(nodes, decorate = () => ({ extra: "", open: true, attrs: "" })) {
  return nodes
    .map((n) => {
      if (n.t === "line") return lineHtml(n);
      const d = decorate(n.info);
      return `<details class="fold"${d.open ? " open" : ""}${d.attrs || ""}><summary>${lineHtml(n.head, true)}${d.extra || ""}</summary>${nodesToHtml(n.body, decorate)}</details>`;
    })
    .join("");
}

/** Highlighted, pretty-printed JSON for a response body. */
export const highlightJson = (value) => nodesToHtml(jsonNodes(value));

/** Plain YAML text for any JSON value. */
export const toYaml = (value) => nodesToText(yamlNodes(value));

/** Human-readable byte count. */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

/** JSON.parse with an error that says line and column, for the payload editor. */
export function parseJsonWithPosition(text) {
  try {
    return { value: JSON.parse(text), error: null };
  } catch (err) {
    const msg = String(err.message || err);
    let pos = null;
    const lc = msg.match(/line (\d+) column (\d+)/);
    const at = msg.match(/position (\d+)/);
    if (at) pos = Number(at[1]);
    let lineNo;
    let col;
    if (lc) {
      lineNo = Number(lc[1]);
      col = Number(lc[2]);
    } else if (pos !== null) {
      const before = text.slice(0, pos).split("\n");
      lineNo = before.length;
      col = before[before.length - 1].length + 1;
    }
    const clean = msg.replace(/^JSON\.parse: /, "").replace(/ in JSON at position \d+.*$/, "").replace(/\s*\(line \d+ column \d+\)/, "");
    const where = lineNo ? `Line ${lineNo}, column ${col}: ` : "";
    return { value: undefined, error: `${where}${clean}`, position: pos };
  }
}
