// "GPT Actions readiness": the server checks the document this page loaded, with its own
// settings, against ChatGPT's rules (POST /openapi/check: one implementation, which
// `gptactions openapi --check` prints too). This module shows the findings, the URL a GPT
// should import, and how to fill ChatGPT's OAuth form from the server's metadata.

import { $, copyText, h, here, withCode } from "./dom.js";
import { describeFailure, sendRequest } from "./transport.js";

/** The scopes a public GPT needs: never `logs`, which reads the log. */
export const GPT_SCOPES = "chat,actions";

let generation = 0;

/** POST /openapi/check of `doc`, with `auth` headers (the server does not count it against the
 * key's rate limit). */
const check = (doc, auth) => sendRequest({
  url: here("/openapi/check"), method: "POST",
  headers: { ...auth, "Content-Type": "application/json", Accept: "application/json" },
  body: JSON.stringify(doc),
});

/** Ask the server to check `app.doc` (with the key, if any, for the keys' scopes); then show it. */
export async function renderReadiness(app) {
  if (!app.doc) return;
  const mine = ++generation;
  const pane = $("readiness");
  pane.setAttribute("aria-busy", "true");
  const auth = app.authHeaders();
  const [keyed, meta] = await Promise.all([check(app.doc, auth), oauthMetadata()]);
  // The key only adds the keys' scopes: a key the server (or the browser) refuses must not
  // cost the check itself.
  const keyRefused = Boolean(auth.Authorization) && (keyed.status === 401 || Boolean(keyed.refused));
  const result = keyRefused ? await check(app.doc, {}) : keyed;
  if (mine !== generation) return; // a newer check (another key, another document) is under way
  pane.removeAttribute("aria-busy");
  if (result.networkError || result.status >= 400 || !result.json) {
    const f = describeFailure(result, "POST", here("/openapi/check"));
    showCount(app, null);
    pane.replaceChildren(h("p", { class: "verdict bad" }, `Could not check the document: ${f.title} — ${f.message}`), guide(meta));
  } else {
    showCount(app, result.json.findings);
    const unkeyed = keyRefused
      ? h("p", { class: "pane-message" }, "Checked without the API key, which the server did not accept: the keys a GPT could be given are not listed.")
      : null;
    pane.replaceChildren(...verdict(result.json), ...(unkeyed ? [unkeyed] : []), guide(meta));
  }
  pane.dataset.checked = String(Number(pane.dataset.checked || 0) + 1); // for scripts and tests
}

let metadata;
async function oauthMetadata() {
  if (metadata === undefined) {
    const result = await sendRequest({ url: here("/.well-known/oauth-authorization-server"), method: "GET", headers: { Accept: "application/json" } });
    metadata = result.status === 200 && result.json ? result.json : null;
  }
  return metadata;
}

function levelOf(findings) {
  if (!findings) return "bad";
  return findings.length ? (findings.some((f) => f.level === "error") ? "bad" : "warn") : "good";
}

/** The tab's counter and the chip in the status bar. */
function showCount(app, findings) {
  const state = levelOf(findings);
  const count = $("readiness-count");
  count.textContent = findings ? (findings.length ? String(findings.length) : "✓") : "?";
  count.className = `count ${state}`;
  count.setAttribute("aria-label", findings ? (findings.length ? `${findings.length} to fix` : "ready") : "not checked");
  const chip = $("readiness-chip");
  if (chip) {
    chip.replaceChildren(
      h("button", { type: "button", class: `chip ${state}`, onclick: () => app.showTool("tool-readiness") },
        !findings ? "GPT Actions: not checked" : findings.length ? `GPT Actions: ${findings.length} to fix` : "GPT Actions: ready"),
    );
  }
}

function verdict({ rules, findings }) {
  const state = levelOf(findings);
  const headline = findings.length
    ? h("p", { class: `verdict ${state}` }, `${findings.length} thing${findings.length === 1 ? "" : "s"} to fix before importing this document into a GPT.`)
    : h("p", { class: "verdict good" }, "Ready: ChatGPT's GPT Actions can import this document as it is.");
  const items = rules.map(({ rule, title }) => {
    const mine = findings.filter((f) => f.rule === rule);
    const ruleState = mine.length ? levelOf(mine) : "good";
    return h("li", { class: `rule ${ruleState}`, dataset: { rule } },
      h("span", { class: "rule-icon", "aria-hidden": "true" }, mine.length ? (ruleState === "bad" ? "✗" : "!") : "✓"),
      h("div", {},
        h("p", { class: "rule-title" }, title, h("span", { class: "sr-only" }, mine.length ? ` — ${mine.length} to fix` : " — passes")),
        mine.length
          ? h("ul", { class: "findings" }, mine.map((f) => h("li", { class: `finding ${f.level}` },
              h("p", {}, ...withCode(f.message)), h("p", { class: "fix" }, h("strong", {}, "Fix: "), ...withCode(f.fix)), h("code", { class: "pointer" }, f.pointer))))
          : null,
      ),
    );
  });
  return [headline, h("ol", { class: "rules" }, items)];
}

function row(label, value, note) {
  return h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, value, note ? h("span", { class: "muted" }, ` ${note}`) : null));
}

const copyable = (text, what) =>
  h("span", { class: "copyable" }, h("code", {}, text), " ", h("button", { type: "button", class: "ghost small", onclick: () => copyText(text, what) }, "Copy"));

/** What to import, and ChatGPT's Authentication dialog filled from the server's OAuth metadata. */
function guide(meta) {
  const importUrl = `${here("/openapi.json")}?scopes=${GPT_SCOPES}`;
  const parts = [
    h("h3", {}, "Import it into a GPT"),
    h("p", {}, "In the GPT editor choose Actions → Import from URL and give ", copyable(importUrl, "Import URL"),
      ": only what the ", h("code", {}, "chat"), " and ", h("code", {}, "actions"), " scopes can call, so the GPT never sees ", h("code", {}, "/logs"),
      ". ChatGPT calls only https servers: serve this over https (GPTACTIONS_PUBLIC_URL). Privacy policy: ",
      copyable(here("/privacy"), "Privacy URL"), "."),
  ];
  if (!meta) return h("section", { class: "gpt-guide" }, ...parts);
  const methods = meta.token_endpoint_auth_methods_supported || [];
  parts.push(
    h("h3", {}, "Authentication: OAuth"),
    h("p", {}, "Each ChatGPT user then signs in as a user of this server (", h("code", {}, "gptactions users create --username NAME"),
      ") and sees only their own conversations. Register the GPT as a client once ChatGPT has shown its callback URL:"),
    h("pre", { class: "code" }, `gptactions oauth clients create --name "My GPT" \\\n  --redirect-uri https://chat.openai.com/aip/g-XXXX/oauth/callback \\\n  --scope chat --scope actions`),
    h("table", { class: "kv oauth-form", "aria-label": "ChatGPT's OAuth form" }, h("tbody", {},
      row("Client ID", h("code", {}, "client_id=…"), "the line the command prints"),
      row("Client Secret", h("code", {}, "client_secret=…"), "printed once, with it"),
      row("Authorization URL", copyable(meta.authorization_endpoint, "Authorization URL")),
      row("Token URL", copyable(meta.token_endpoint, "Token URL")),
      row("Scope", copyable(GPT_SCOPES.replace(",", " "), "Scope"), `(of ${(meta.scopes_supported || []).join(", ")}; add logs only for the user's own log)`),
      row("Token Exchange Method", "Default (POST request)",
        `(client_secret_post${methods.includes("client_secret_basic") ? "; “Basic authorization header” works too" : ""})`),
    )),
    h("p", {}, "With OAuth, import ", copyable(`${importUrl}&auth=oauth`, "OAuth import URL"),
      " instead: each user may also export and erase their own data (", h("code", {}, "/me/export"), ", ", h("code", {}, "/me/data"), ")."),
    h("p", { class: "muted" }, "From ", h("a", { href: here("/.well-known/oauth-authorization-server") }, "/.well-known/oauth-authorization-server"),
      " (issuer ", h("code", {}, meta.issuer), ")."),
  );
  return h("section", { class: "gpt-guide" }, ...parts);
}
