"""The prompt cache is reused only within a cache scope (a tenant, or one OAuth user), but for
the server's own text: no caller can tell, from its cached tokens, what another one sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gptactions.llm.base import BackendError, ChatMessage, Generation, GenerationRequest, Usage
from gptactions.llm.engine import COPY_MIN_TOKENS
from gptactions.llm.local import LocalBackend
from gptactions.services.actions.service import ActionCall
from gptactions.services.keys import USERS_TENANT, Principal
from gptactions.services.turns import Turn
from tests.conftest import ApiClient
from tests.model.test_batching import endless_job, first_piece

pytestmark = pytest.mark.model

SECRET = "Vault combination for Osprey is 58213, keep it quiet."
GUESS = "Vault combination for Osprey is 58213"
WRONG = "Vault combination for Osprey is 58214"
UNRELATED = "Which birds nest on cliffs?"


def scope() -> str:
    """A scope of its own: no sequence of the shared engine holds anything of it yet."""
    return uuid.uuid4().hex


def key_principal(tenant: str) -> Principal:
    return Principal(f"key-{tenant}", "test", tenant, frozenset({"chat", "actions"}))


def oauth_principal(user: str) -> Principal:
    return Principal("oauth-gpt", "gpt", USERS_TENANT, frozenset({"chat", "actions"}), user)


async def cached(
    backend: LocalBackend, scope: str, *messages: ChatMessage, public: int = 0
) -> Usage:
    generation = await backend.generate(
        GenerationRequest(
            messages=messages, max_tokens=1, cache_scope=scope, public_messages=public
        )
    )
    return generation.usage


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def test_a_tenant_and_each_oauth_user_of_it_are_scopes_of_their_own() -> None:
    alice, bob = oauth_principal("alice"), oauth_principal("bob")
    assert alice.cache_scope != bob.cache_scope
    assert alice.cache_scope == oauth_principal("alice").cache_scope
    # The tenant's own keys share a scope, which is none of its OAuth users'.
    keys = (
        Principal("k1", "one", USERS_TENANT, frozenset()),
        Principal("k2", "two", USERS_TENANT, frozenset()),
    )
    assert keys[0].cache_scope == keys[1].cache_scope
    assert keys[0].cache_scope not in (alice.cache_scope, bob.cache_scope)
    assert key_principal("a").cache_scope != key_principal("b").cache_scope
    # No tenant and user can be taken for another pair.
    assert (
        Principal("k", "k", "a:b", frozenset(), "c").cache_scope
        != Principal("k", "k", "a", frozenset(), "b:c").cache_scope
    )


async def test_another_scope_cannot_tell_a_right_guess_from_a_wrong_one(
    local_backend: LocalBackend,
) -> None:
    """The audit's attack: a right guess of the beginning of another tenant's message got more
    cached tokens than a wrong one (33 against 29)."""
    owner = scope()
    await cached(local_backend, owner, user(SECRET))
    right = await cached(local_backend, scope(), user(GUESS))
    wrong = await cached(local_backend, scope(), user(WRONG))
    unrelated = await cached(local_backend, scope(), user(UNRELATED))
    assert right.cached_tokens == wrong.cached_tokens == unrelated.cached_tokens == 0
    # Within the scope, the memory is reused as before.
    again = await cached(local_backend, owner, user(GUESS))
    assert again.cached_tokens >= again.prompt_tokens - 8


async def test_only_the_public_prefix_is_reused_across_scopes(
    local_backend: LocalBackend,
) -> None:
    model = local_backend._model
    assert model is not None
    system = ChatMessage("system", "You answer questions about birds, briefly. " * 4)
    _, public = model.prompt_with_public((system, user(SECRET)), 1)
    assert public > 30
    owner = scope()
    await cached(local_backend, owner, system, user(SECRET), public=1)
    # Within the scope, the memory is reused as before.
    again = await cached(local_backend, owner, system, user(GUESS), public=1)
    assert again.cached_tokens > public + 5
    right = await cached(local_backend, scope(), system, user(GUESS), public=1)
    unrelated = await cached(local_backend, scope(), system, user(UNRELATED), public=1)
    assert right.cached_tokens == unrelated.cached_tokens == public
    # A caller's own system message is no public text: nothing of it is reused.
    private = await cached(local_backend, scope(), system, user(GUESS))
    assert private.cached_tokens == 0


async def test_a_busy_sequence_of_another_scope_lends_only_the_public_prefix(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying another sequence's memory (`_donor`) keeps to the same rule, and the reply is the
    one the prompt gets from scratch: nothing beyond the public prefix was kept."""
    model = local_backend._model
    assert model is not None
    engine = local_backend.engine
    system = ChatMessage("system", "You answer questions about rivers, briefly. " * 12)
    question = (system, user("Which river flows through Paris?"))
    _, public = model.prompt_with_public(question, 1)
    assert public > COPY_MIN_TOKENS
    owner = scope()

    async def ask(scope: str) -> Generation:
        return await local_backend.generate(
            GenerationRequest(messages=question, max_tokens=8, cache_scope=scope, public_messages=1)
        )

    await ask(owner)
    # What another scope is answered from the public prefix (the greedy reply depends a
    # little on how many prompt tokens are decoded together, so it is compared with this).
    alone = await ask(scope())
    assert alone.usage.cached_tokens == public
    holder = endless_job(local_backend)
    holder.prompt, holder.public = model.prompt_with_public(
        (system, user("Which river flows through Paris? Say x forever.")), 1
    )
    holder.scope = owner
    engine.submit(holder)
    try:
        assert not isinstance(await first_piece(holder), BaseException)
        # The holder took the one sequence that held the system prompt: another scope's request
        # borrows it from the busy holder, and no more of it.
        copied = 0
        copy_memory = engine._copy_memory

        def counted(donor: Any, sequence: Any) -> bool:
            nonlocal copied
            copied += 1
            return copy_memory(donor, sequence)

        monkeypatch.setattr(engine, "_copy_memory", counted)
        lent = await ask(scope())
    finally:
        engine.cancel(holder)
    assert copied == 1
    assert lent.usage.cached_tokens == public
    assert lent.text == alone.text


async def test_conversations_reuse_the_system_prompt_across_tenants_but_no_message(
    model_api: ApiClient, local_backend: LocalBackend
) -> None:
    conversations = model_api.runtime.conversations
    model = local_backend._model
    assert model is not None
    system = ChatMessage("system", model_api.runtime.settings.system_prompt)
    _, public = model.prompt_with_public((system, user(SECRET)), 1)
    assert public > 0

    async def say(principal: Principal, text: str) -> int:
        turn = Turn(user_id=principal.user_id or "someone", message=text, max_tokens=1)
        try:
            reply = await conversations.start(principal, turn)
        except BackendError:  # one token may be no reply; the usage is in the log all the same
            pytest.fail("the model wrote nothing in one token")
        return reply.usage.cached_tokens

    tenant = scope()
    await say(key_principal(tenant), SECRET)
    assert await say(key_principal(tenant), GUESS) > public + 5
    assert await say(key_principal(scope()), GUESS) == public
    assert await say(key_principal(scope()), UNRELATED) == public
    # Two users of a public GPT (one tenant, @users) are scopes of their own.
    alice, bob = oauth_principal(scope()), oauth_principal(scope())
    await say(alice, SECRET)
    assert await say(alice, GUESS) > public + 5
    assert await say(bob, GUESS) == public


async def test_an_action_reuses_its_instructions_across_tenants_but_not_the_text(
    model_api: ApiClient,
) -> None:
    actions = model_api.runtime.actions

    async def sentiment(principal: Principal, text: str) -> int:
        call = ActionCall("sentiment", {"text": text}, user_id="someone")
        outcome = await actions.run(principal, call)
        assert outcome.success, outcome.result
        return outcome.usage.cached_tokens

    tenant = scope()
    await sentiment(key_principal(tenant), SECRET)
    again = await sentiment(key_principal(tenant), GUESS)
    right = await sentiment(key_principal(scope()), GUESS)
    unrelated = await sentiment(key_principal(scope()), UNRELATED)
    assert right == unrelated > 0  # the action's system prompt, and nothing of the text
    assert again > right + 5


async def test_a_completion_reuses_nothing_of_another_tenants_messages(
    model_api: ApiClient,
) -> None:
    """On /v1 every message is the client's, its system message too."""
    system = {"role": "system", "content": "You are a terse assistant. " * 8}

    async def complete(key: str, text: str) -> int:
        body = {
            "model": "local",
            "messages": [system, {"role": "user", "content": text}],
            "max_tokens": 1,
        }
        answer = await model_api.post("/v1/chat/completions", body, key=key)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    owner = await model_api.key(tenant=scope())
    await complete(owner, SECRET)
    assert await complete(await model_api.key(tenant=scope()), GUESS) == 0
    assert await complete(owner, GUESS) > 40


def test_the_public_prefix_ends_with_the_last_public_message(local_backend: LocalBackend) -> None:
    model = local_backend._model
    assert model is not None
    system = ChatMessage("system", "You are brief.")
    tokens, public = model.prompt_with_public((system, user(SECRET)), 1)
    assert tokens == model.prompt_tokens((system, user(SECRET)))
    assert model.detokenize(tokens[:public]).decode().endswith("You are brief.")
    other, same = model.prompt_with_public((system, user(UNRELATED)), 1)
    assert same == public and other[:public] == tokens[:public]
    assert model.prompt_with_public((system, user(SECRET)), 0)[1] == 0


def test_a_user_defined_system_prompt_is_public_only_without_parameters() -> None:
    from pathlib import Path

    from gptactions.services.actions.userdefined import PromptAction, _parse_entry

    def handler(system: str) -> PromptAction:
        entry = {
            "name": "greet",
            "description": "Greets.",
            "parameters": {"type": "object", "properties": {"who": {"type": "string"}}},
            "prompt": "Greet {{ who }}.",
            "system": system,
        }
        made = _parse_entry(Path("actions.yaml"), 0, entry).handler
        assert isinstance(made, PromptAction)
        return made

    assert handler("You greet people warmly.").system_public
    assert handler("{% for n in range(2) %}Warmly. {% endfor %}").system_public
    assert not handler("You greet {{ who }} warmly.").system_public
