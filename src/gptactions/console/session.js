// What a reload must not lose, kept in the tab's sessionStorage (never the key, which has its own
// slot): the conversation (its id, user and transcript), the payloads typed in, and the
// parameters filled in. Gone when the tab is closed, as the key is unless remembered.

const SESSION_SLOT = "gptactions.session";
const DRAFT_MAX = 64 * 1024; // a larger payload is left out: it would crowd out the rest

export function initSession(app) {
  let timer;

  function write() {
    clearTimeout(timer);
    const conv = app.conversation.state;
    const drafts = [...app.touched]
      .map((key) => [key, app.drafts.get(key)])
      .filter(([, text]) => typeof text === "string" && text.length <= DRAFT_MAX);
    const state = {
      conversation: conv.id ? { id: conv.id, userId: conv.userId, turns: conv.turns } : null,
      drafts,
      params: [...app.paramValues],
      op: app.op && app.op.key,
    };
    app.store.set(sessionStorage, SESSION_SLOT, JSON.stringify(state));
  }

  /** Keep the session soon (typing writes once it pauses). */
  function save() {
    clearTimeout(timer);
    timer = setTimeout(write, 250);
  }

  /** Put back what the last page of this tab kept, for the operations the document still has. */
  function restore() {
    let state;
    try {
      state = JSON.parse(app.store.get(sessionStorage, SESSION_SLOT) || "null");
    } catch {
      state = null;
    }
    if (!state || typeof state !== "object") return null;
    const known = new Set(app.ops.map((op) => op.key));
    for (const [key, text] of state.drafts || []) {
      if (!known.has(key) || typeof text !== "string") continue;
      app.drafts.set(key, text);
      app.touched.add(key);
    }
    for (const [key, values] of state.params || []) if (known.has(key) && values) app.paramValues.set(key, values);
    const conv = state.conversation;
    if (conv && typeof conv.id === "string") {
      Object.assign(app.conversation.state, { id: conv.id, userId: conv.userId ?? null, turns: Array.isArray(conv.turns) ? conv.turns : [] });
    }
    return known.has(state.op) ? state.op : null;
  }

  addEventListener("pagehide", write); // a reload right after typing still keeps it
  // `write` keeps the session at once: after the user's data is forgotten, before a reload.
  return { save, write, restore };
}
