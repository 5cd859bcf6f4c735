// "Sign in": the console as an OAuth client of its own server. The authorization code grant with
// PKCE (S256), from the browser, against the endpoints in /.well-known/oauth-authorization-server;
// the access token then goes where a key would, so every request is sent as the signed-in user.
// The console is a public client (no secret): gptactions oauth clients create --public
// --redirect-uri <this page's URL>. The access token is kept where a key is; the refresh token
// only in this tab's sessionStorage (never localStorage, "remember" or not), and a minute before
// the access token expires the console trades it for a new pair (the server rotates refresh
// tokens, and revokes the user's tokens for this client if an old one is ever presented again).
// A tab left open stays signed in until the refresh token expires, is revoked, or the user signs
// out; a closed tab leaves no refresh token behind.

import { $, h, here, toast } from "./dom.js";
import { sendRequest } from "./transport.js";

const CLIENT_SLOT = "gptactions.oauthClient";
const PENDING_SLOT = "gptactions.oauthPending";
const REFRESH_SLOT = "gptactions.oauthRefresh";
const REFRESH_AHEAD_MS = 60_000; // refresh this long before the access token expires...
const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's longest wait (~24.8 days): longer ones fire at once

const base64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const random = (n) => base64url(crypto.getRandomValues(new Uint8Array(n)));
const redirectUri = () => `${location.origin}${location.pathname}`;

async function metadata() {
  const result = await sendRequest({ url: here("/.well-known/oauth-authorization-server"), method: "GET", headers: { Accept: "application/json" } });
  if (result.status !== 200 || !result.json) throw new Error("the server's OAuth metadata could not be read");
  return result.json;
}

const form = (fields) => new URLSearchParams(fields).toString();
const FORM = { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" };
/** Why the token endpoint said no: its OAuth error, else what the request met. */
const refusal = (result) => (result.json ? result.json.error_description || result.json.error : result.networkError || result.status);

export function initSignIn(app) {
  const box = $("signin");
  const status = $("signin-status");
  const clientField = $("oauth-client");
  clientField.value = app.store.get(localStorage, CLIENT_SLOT) || "";
  $("oauth-redirect").textContent = redirectUri();

  function say(text, bad = false) {
    status.textContent = text;
    status.classList.toggle("field-error", bad);
    if (text) box.open = true;
  }

  /** The sign-in form when signed out; the "Sign out" button otherwise. */
  function showForm(signedOut) {
    $("signout").hidden = signedOut;
    $("signin-form").hidden = !signedOut;
  }

  // ---- the refresh token: this tab only, traded for a new pair before the access token expires

  let refreshTimer = null;
  const refreshState = () => JSON.parse(app.store.get(sessionStorage, REFRESH_SLOT) || "null");

  function forgetRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    app.store.del(sessionStorage, REFRESH_SLOT);
  }

  /** Keep a token answer's refresh token, and refresh a minute before its access token expires. */
  function keep(tokens, clientId) {
    if (!tokens.refresh_token) return forgetRefresh();
    const lifetime = (Number(tokens.expires_in) || 3600) * 1000;
    const expiresAt = Date.now() + lifetime;
    // ...or, for a short-lived token, when three quarters of its life are gone.
    const refreshAt = expiresAt - Math.min(REFRESH_AHEAD_MS, lifetime / 4);
    app.store.set(sessionStorage, REFRESH_SLOT, JSON.stringify({
      clientId, refreshToken: tokens.refresh_token, accessToken: tokens.access_token, refreshAt,
    }));
    schedule();
  }

  function schedule() {
    clearTimeout(refreshTimer);
    const saved = refreshState();
    if (!saved) return;
    const wait = saved.refreshAt - Date.now();
    if (wait > MAX_TIMER_MS) { // not yet: look again later
      refreshTimer = setTimeout(schedule, MAX_TIMER_MS);
      return;
    }
    refreshTimer = setTimeout(() => refresh().catch((err) => say(`Cannot refresh the sign-in: ${err.message}.`, true)), Math.max(0, wait));
  }

  async function refresh() {
    const saved = refreshState();
    if (!saved) return;
    if (app.key() !== saved.accessToken) return forgetRefresh(); // another key was put in its place
    const later = () => { // the server is away: try again in half a minute
      refreshTimer = setTimeout(() => refresh().catch(() => {}), REFRESH_AHEAD_MS / 2);
    };
    let result;
    try {
      const meta = await metadata();
      result = await sendRequest({
        url: meta.token_endpoint, method: "POST", headers: FORM,
        body: form({ grant_type: "refresh_token", refresh_token: saved.refreshToken, client_id: saved.clientId }),
      });
    } catch {
      return later();
    }
    if (result.status === 200 && result.json && result.json.access_token) {
      app.setKey(result.json.access_token);
      keep(result.json, saved.clientId);
      return;
    }
    if (result.networkError || result.status >= 500) return later();
    forgetRefresh();
    say(`The sign-in has ended (${refusal(result)}): sign in again.`, true);
    showForm(true);
  }

  async function start(event) {
    event.preventDefault();
    const clientId = clientField.value.trim();
    if (!clientId) {
      say("Paste the console's OAuth client ID first.", true);
      clientField.focus();
      return;
    }
    if (!window.crypto || !crypto.subtle) {
      say("Signing in needs https (or localhost): the browser offers PKCE's SHA-256 only there.", true);
      return;
    }
    app.store.set(localStorage, CLIENT_SLOT, clientId);
    let meta;
    try {
      meta = await metadata();
    } catch (err) {
      say(`Cannot sign in: ${err.message}.`, true);
      return;
    }
    const verifier = random(48);
    const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const state = random(16);
    app.store.set(sessionStorage, PENDING_SLOT, JSON.stringify({ state, verifier, clientId, redirectUri: redirectUri() }));
    const query = form({
      response_type: "code", client_id: clientId, redirect_uri: redirectUri(), state,
      code_challenge: challenge, code_challenge_method: "S256",
    });
    location.assign(`${meta.authorization_endpoint}?${query}`);
  }

  /** Back from /oauth/authorize with ?code=…&state=… (or ?error=…): exchange the code. */
  async function finish() {
    const params = new URLSearchParams(location.search);
    if (!params.has("state") || !(params.has("code") || params.has("error"))) return;
    history.replaceState(null, "", redirectUri()); // the code is single-use: keep it out of history
    const pending = JSON.parse(app.store.get(sessionStorage, PENDING_SLOT) || "null");
    app.store.del(sessionStorage, PENDING_SLOT);
    if (!pending || pending.state !== params.get("state")) {
      say("The sign-in answer does not match a sign-in started here; start again.", true);
      return;
    }
    if (params.has("error")) {
      say(`Not signed in: ${params.get("error_description") || params.get("error")}.`, true);
      return;
    }
    const meta = await metadata();
    const result = await sendRequest({
      url: meta.token_endpoint, method: "POST", headers: FORM,
      body: form({
        grant_type: "authorization_code", code: params.get("code"), redirect_uri: pending.redirectUri,
        client_id: pending.clientId, code_verifier: pending.verifier,
      }),
    });
    if (result.status !== 200 || !result.json || !result.json.access_token) {
      say(`The token exchange failed: ${refusal(result)}.`, true);
      return;
    }
    keep(result.json, pending.clientId);
    await app.setKey(result.json.access_token); // the document as the user sees it, loaded
    await showWho();
    toast("Signed in");
  }

  /** "Signed in as alice" when the key in use is an OAuth token. */
  async function showWho() {
    const token = app.key();
    const signedIn = token.startsWith("gpto_");
    showForm(!signedIn);
    if (!signedIn) return forgetRefresh();
    const saved = refreshState();
    if (saved && saved.accessToken === token && saved.refreshAt <= Date.now()) {
      await refresh(); // back to a tab whose access token has expired, or is about to
      if (app.key() !== token) return showWho(); // refreshed: the new token is the one to show
    } else {
      schedule();
    }
    const result = await sendRequest({ url: here("/api/v1/gpt/me"), method: "GET", headers: { ...app.authHeaders(), Accept: "application/json" } });
    if (result.status === 200 && result.json) {
      say(`Signed in as ${result.json.userId} (OAuth; scopes ${result.json.scopes.join(", ")}). Requests are sent with this user's access token.`);
    } else {
      say("The access token is no longer valid (expired or revoked): sign in again.", true);
      showForm(true);
    }
  }

  async function signOut() {
    const token = app.key();
    const clientId = app.store.get(localStorage, CLIENT_SLOT) || "";
    forgetRefresh(); // revoking the access token revokes its refresh token: they are one pair
    try {
      const meta = await metadata();
      if (meta.revocation_endpoint && clientId) {
        await sendRequest({ url: meta.revocation_endpoint, method: "POST", headers: FORM, body: form({ token, client_id: clientId }) });
      }
    } finally {
      app.setKey("");
      app.forgetUser(); // what the console kept of the user goes with the sign-in
      say("Signed out; the token is revoked, and this browser's history, conversation, drafts and log filters are cleared.");
      showForm(true);
    }
  }

  $("signin-form").addEventListener("submit", start);
  $("signout").addEventListener("click", signOut);
  box.hidden = false;
  return { ready: finish().then(showWho).catch((err) => say(`Cannot sign in: ${err.message}.`, true)), showWho };
}
