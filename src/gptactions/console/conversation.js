// The conversation flow: after POST /conversations answers, its conversationId is carried
// into the next /respond payload, and the exchange is shown as a chat transcript.

import { $, h } from "./dom.js";

const FOLLOW_UP = "Can you tell me more about that?";

export const isStart = (op) => op && op.method === "post" && /\/conversations$/.test(op.path);
export const isRespond = (op) => op && op.method === "post" && /\/respond$/.test(op.path);

export function createConversation(app) {
  const state = { id: null, userId: null, turns: [], pending: null };

  function render() {
    const turns = $("transcript-turns");
    const hasAny = state.turns.length > 0 || state.pending;
    // A start's reply on its way belongs to a new conversation, not to the one shown before.
    const fresh = Boolean(state.pending && state.pending.fresh);
    $("transcript").hidden = !hasAny;
    $("transcript-id").textContent = (!fresh && state.id) || "new";
    turns.replaceChildren();
    const all = fresh ? [state.pending] : state.pending ? [...state.turns, state.pending] : state.turns;
    for (const turn of all) {
      const pending = turn === state.pending;
      turns.append(
        h("li", { class: "bubble user" }, h("span", { class: "who" }, "You"), h("p", {}, turn.user ?? "")),
        h("li", { class: `bubble assistant${pending ? " typing" : ""}${turn.cancelled ? " cancelled" : ""}` },
          h("span", { class: "who" }, turn.cancelled ? "Assistant · cancelled" : "Assistant"),
          h("p", {}, turn.reply || (pending ? "…" : turn.cancelled ? "Cancelled before the reply arrived." : ""))),
      );
    }
    turns.scrollTop = turns.scrollHeight;
    renderOffer();
  }

  // The banner above the payload: either "continuing" (on /respond) or an offer to go there.
  function renderOffer() {
    const box = $("conversation-offer");
    box.replaceChildren();
    box.hidden = !state.id;
    if (!state.id) return;
    const idCode = h("code", {}, state.id);
    if (isRespond(app.op)) {
      box.append(
        h("span", {}, "Continuing conversation ", idCode, ` (${state.turns.length} turn${state.turns.length === 1 ? "" : "s"}).`),
        h("button", { type: "button", class: "link", onclick: reset }, "Start a new one"),
      );
    } else {
      const respond = app.ops.find(isRespond);
      box.append(h("span", {}, "Conversation ", idCode, " is open."));
      if (respond) {
        box.append(h("button", { type: "button", class: "ghost small", id: "continue-conversation", onclick: () => continueIn(respond) },
          "Reply with /respond →"));
      }
    }
  }

  function continueIn(respond) {
    app.selectOperation(respond.key);
    app.patchPayload(respond, { conversationId: state.id, userId: state.userId, message: FOLLOW_UP });
    const editor = $("payload");
    editor.focus();
    const at = editor.value.indexOf(FOLLOW_UP);
    if (at >= 0) editor.setSelectionRange(at, at + FOLLOW_UP.length);
  }

  function reset() {
    state.id = null;
    state.turns = [];
    state.pending = null;
    const respond = app.ops.find(isRespond);
    if (respond) app.patchPayload(respond, { conversationId: undefined });
    render();
    app.session.save();
  }

  /** Forget the conversation altogether (its user too): the user has left (Forget, Sign out). */
  function clear() {
    Object.assign(state, { id: null, userId: null, turns: [], pending: null });
    render();
  }

  /** A POST /conversations or /respond is about to go out (streamed replies fill in live). */
  function begin(op, payload) {
    if (!isStart(op) && !isRespond(op)) return;
    state.pending = { user: payload && payload.message, reply: "", fresh: isStart(op) };
    render();
  }

  function token(text) {
    if (!state.pending) return;
    state.pending.reply += text;
    const live = $("transcript-turns").lastElementChild;
    if (live) live.querySelector("p").textContent = state.pending.reply;
  }

  /** The call finished: `data` is the JSON answer (or the stream's done event), or null;
   * `cancelled` when the user stopped it (what had arrived stays, marked so). */
  function finish(op, payload, status, data, cancelled = false) {
    const pending = state.pending;
    state.pending = null;
    if (cancelled && pending) {
      keepCancelled(pending, payload);
      render();
      return;
    }
    if ((!isStart(op) && !isRespond(op)) || status !== 200 || !data || !data.conversationId) {
      render();
      return;
    }
    if (isStart(op) || data.conversationId !== state.id) {
      state.id = data.conversationId;
      state.userId = payload && payload.userId;
      state.turns = [];
    }
    state.turns.push({ user: payload && payload.message, reply: data.reply ?? (pending && pending.reply) });
    const respond = app.ops.find(isRespond);
    // Offer the id to the next /respond: prefill its payload (keeping what the user typed).
    if (respond) app.patchPayload(respond, { conversationId: state.id, userId: state.userId });
    render();
  }

  /** A cancelled turn: the server keeps it too (as `cancelled`), so the transcript does. */
  function keepCancelled(pending, payload) {
    const turn = { user: pending.user, reply: pending.reply, cancelled: true };
    if (pending.fresh) {
      // The server began a new conversation, but its id never arrived: what was open is left.
      state.id = null;
      state.userId = payload && payload.userId;
      state.turns = [turn];
      const respond = app.ops.find(isRespond);
      if (respond) app.patchPayload(respond, { conversationId: undefined });
    } else if (!payload || !payload.conversationId || payload.conversationId === state.id) {
      state.turns.push(turn);
    }
  }

  $("transcript-new").addEventListener("click", reset);
  return { state, render, renderOffer, begin, token, finish, reset, clear };
}
