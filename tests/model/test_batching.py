"""The batched engine with the real model: identical greedy text, cancellation, queueing, failure."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import numpy as np
import pytest

from gptactions.llm.base import (
    BackendError,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    GenerationRequest,
    PromptTooLong,
)
from gptactions.llm.engine import Job, Outbox, _split_at_stop
from gptactions.llm.local import LocalBackend, default_threads
from gptactions.llm.sampling import SamplingParams

pytestmark = pytest.mark.model

PROMPTS = [
    "What is the capital of France?",
    "Count from one to ten.",
    "Write a haiku about the sea.",
    "Explain what a CPU does.",
    "Name three fruits.",
    "Tell me a story.",
    "What is 2+2?",
    "Describe a cat.",
]
# A grammar with no end: its sequence generates until it is cancelled or reaches max_tokens.
ENDLESS = 'root ::= "x" root\n'


def ask(text: str, max_tokens: int = 16, **kw: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", text),),
        max_tokens=max_tokens,
        **kw,  # type: ignore[arg-type]
    )


def endless_job(backend: LocalBackend, text: str = "Say x.") -> Job:
    """A job straight into the engine that holds its sequence until cancelled."""
    assert backend._model is not None
    return Job(
        prompt=backend._model.prompt_tokens((ChatMessage("user", text),)),
        max_tokens=1000,
        sampling=SamplingParams(grammar=ENDLESS),
        stop=(),
        outbox=Outbox(asyncio.get_running_loop()),
    )


async def first_piece(job: Job) -> Chunk | BaseException:
    return await job.outbox.queue.get()


def test_the_default_thread_count_is_the_cores_the_process_may_use() -> None:
    assert default_threads() == len(os.sched_getaffinity(0))
    assert LocalBackend().threads == default_threads()
    assert LocalBackend(threads=3).threads == 3


def test_stop_strings_are_held_back_while_they_may_be_starting() -> None:
    assert _split_at_stop("Hello wor", ("world",)) == ("Hello ", "wor", False)
    assert _split_at_stop("Hello world!", ("world",)) == ("Hello ", "", True)
    assert _split_at_stop("Hello", ("xyz",)) == ("Hello", "", False)
    assert _split_at_stop("ab", ()) == ("ab", "", False)


async def test_greedy_text_is_the_same_alone_and_beside_seven_others(
    local_backend: LocalBackend,
) -> None:
    requests = [ask(text, 24) for text in PROMPTS]
    alone = [(await local_backend.generate(request)).text for request in requests]
    together = await asyncio.gather(*(local_backend.generate(r) for r in requests))
    assert [g.text for g in together] == alone
    assert all(text.strip() for text in alone)


async def test_sixteen_concurrent_requests_on_eight_sequences(local_backend: LocalBackend) -> None:
    assert local_backend.parallel == 8
    requests = [ask(f"Say the number {n}.", 6) for n in range(16)]
    answers = await asyncio.wait_for(
        asyncio.gather(*(local_backend.generate(r) for r in requests)), timeout=600
    )
    assert len(answers) == 16 and all(a.usage.completion_tokens > 0 for a in answers)
    assert local_backend.engine.stats().sequences_in_use == 0


async def test_a_cancelled_request_frees_its_sequence_for_the_next(
    local_backend: LocalBackend,
) -> None:
    engine = local_backend.engine
    holders = [endless_job(local_backend, f"Say x {n}.") for n in range(8)]
    try:
        for job in holders:
            engine.submit(job)
        for job in holders:
            assert isinstance(await first_piece(job), Chunk)  # all eight are generating
        waiting = asyncio.ensure_future(local_backend.generate(ask("Say hi.", 4)))
        await asyncio.sleep(0)
        assert not waiting.done()
        engine.cancel(holders.pop(3))  # the client of one went away mid-batch
        reply = await asyncio.wait_for(waiting, timeout=300)
        assert reply.text and reply.usage.completion_tokens > 0
        assert all(not job.cancelled and job.completion_tokens > 0 for job in holders)
    finally:
        for job in holders:
            engine.cancel(job)


async def test_a_closed_stream_mid_batch_leaves_the_others_intact(
    local_backend: LocalBackend,
) -> None:
    requests = [ask(text, 20) for text in PROMPTS[:4]]
    alone = [(await local_backend.generate(r)).text for r in requests]
    quitter = local_backend.stream(ask("Tell me a long story.", 400))
    assert (await anext(quitter)).text is not None
    others = asyncio.gather(*(local_backend.generate(r) for r in requests))
    await quitter.aclose()
    assert [g.text for g in await others] == alone


async def test_a_prompt_longer_than_the_window_is_refused(local_backend: LocalBackend) -> None:
    with pytest.raises(PromptTooLong):
        await local_backend.generate(ask("word " * 3000, 4))


async def test_a_grammar_request_beside_free_text(local_backend: LocalBackend) -> None:
    free = [ask(text, 16) for text in PROMPTS[:3]]
    alone = [(await local_backend.generate(r)).text for r in free]
    labels = ("positive", "negative", "neutral")
    choice = ask("Is 'I love it' positive, negative or neutral?", 8, choices=labels)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    extract = ask("Ann is 3 years old. Give her name and age as JSON.", 40, json_schema=schema)
    results = await asyncio.gather(
        local_backend.generate(choice),
        local_backend.generate(extract),
        *(local_backend.generate(r) for r in free),
    )
    assert results[0].text in labels
    import json

    data = json.loads(results[1].text)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
    assert [g.text for g in results[2:]] == alone


async def test_a_long_prompt_is_admitted_while_seven_sequences_stream(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt longer than a step takes is fed in chunks of the shared budget, and each of
    those steps gives each of the seven streams its token: they do not wait for the prompt."""
    engine, model = local_backend.engine, local_backend._model
    assert model is not None
    long_prompt = "Summarize this text. " + "The river runs to the sea. " * 50
    tokens = model.prompt_tokens((ChatMessage("user", long_prompt),))
    assert len(tokens) > engine.prompt_budget  # more than one step takes, even alone
    long_job = Job(
        prompt=tokens,
        max_tokens=2,
        sampling=SamplingParams(),
        stop=(),
        outbox=Outbox(asyncio.get_running_loop()),
    )
    streams = [endless_job(local_backend, f"Say x {n}.") for n in range(7)]
    # After each step, read on the scheduler's thread: the long prompt's tokens fed so far (past
    # those its sequence already held), and each stream's tokens.
    seen: list[tuple[int, list[int]]] = []
    recording = asyncio.Event()
    loop, real_deliver = asyncio.get_running_loop(), engine._deliver

    def recording_deliver(deliveries: list[tuple[Job, Chunk | BaseException]]) -> None:
        seen.append((long_job.fed - long_job.cached, [j.completion_tokens for j in streams]))
        if len(seen) == 1:
            loop.call_soon_threadsafe(recording.set)
        real_deliver(deliveries)

    try:
        for job in streams:
            engine.submit(job)
        for job in streams:
            await first_piece(job)
        monkeypatch.setattr(engine, "_deliver", recording_deliver)
        await recording.wait()  # a step before the long prompt's first is on record
        engine.submit(long_job)
        while not (piece := await asyncio.wait_for(first_piece(long_job), timeout=600)).done:
            assert isinstance(piece, Chunk)
        assert isinstance(piece, Chunk) and piece.usage and piece.usage.completion_tokens > 0
    finally:
        for job in streams:
            engine.cancel(job)
    # The steps that fed the prompt, each with what it gave every stream.
    steps = [
        (fed - fed_before, [t - b for t, b in zip(made, made_before, strict=True)])
        for (fed_before, made_before), (fed, made) in itertools.pairwise(seen)
        if fed > fed_before
    ]
    assert sum(chunk for chunk, _ in steps) == len(tokens) - long_job.cached
    assert len(steps) >= 5  # 64 prompt tokens a step at most, while other sequences generate
    assert all(chunk <= engine.shared_prompt_budget for chunk, _ in steps), steps
    assert all(given == [1] * 7 for _, given in steps), steps


async def test_a_burst_of_requests_gets_first_tokens_in_turn_not_all_after_the_last_prompt(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four new prompts at once: the first is answered after its own prompt, not after all four."""
    engine = local_backend.engine
    model = local_backend._model
    assert model is not None
    steps = 0
    first_step: dict[int, int] = {}
    real_decode, real_deliver = engine._decode, engine._deliver

    def counting_decode() -> int:
        nonlocal steps
        steps += 1
        return real_decode()

    def recording_deliver(deliveries: list[tuple[Job, Chunk | BaseException]]) -> None:
        for job, item in deliveries:
            if isinstance(item, Chunk) and (item.text or item.done):
                first_step.setdefault(id(job), steps)
        real_deliver(deliveries)

    monkeypatch.setattr(engine, "_decode", counting_decode)
    monkeypatch.setattr(engine, "_deliver", recording_deliver)
    topics = ["a red kite", "an old map", "a quiet harbour", "the first snow"]
    jobs = [
        Job(
            prompt=model.prompt_tokens(
                (ChatMessage("user", f"Describe {topic} in {n + 3} careful sentences, slowly."),)
            ),
            max_tokens=2,
            sampling=SamplingParams(),
            stop=(),
            outbox=Outbox(asyncio.get_running_loop()),
        )
        for n, topic in enumerate(topics)
    ]
    assert sum(len(job.prompt) for job in jobs) > engine.shared_prompt_budget * 2
    with engine._wakeup:  # the scheduler sees the four together
        for job in jobs:
            engine.submit(job)
    for job in jobs:
        while not (await job.outbox.queue.get()).done:  # type: ignore[union-attr]
            pass
    order = [first_step[id(job)] for job in jobs]
    assert order == sorted(order)
    assert order[0] < order[-1]  # the first did not wait for the last one's prompt


async def test_the_prompt_cache_reuses_a_shared_prefix(local_backend: LocalBackend) -> None:
    system = ChatMessage("system", "You are a terse assistant. " * 20)
    first = await local_backend.generate(
        GenerationRequest(messages=(system, ChatMessage("user", "Hi.")), max_tokens=4)
    )
    second = await local_backend.generate(
        GenerationRequest(messages=(system, ChatMessage("user", "Bye.")), max_tokens=4)
    )
    assert first.usage.prompt_tokens > 100
    assert second.usage.cached_tokens > 100
    assert second.usage.cached_tokens < second.usage.prompt_tokens


async def test_a_busy_sequence_lends_its_prefix_and_the_reply_is_unchanged(
    local_backend: LocalBackend,
) -> None:
    """A request admitted while another holds the shared system prompt copies that memory
    instead of decoding it again, and answers exactly what it answers from scratch."""
    engine = local_backend.engine
    assert engine is not None
    system = ChatMessage("system", "You answer questions about geography, briefly. " * 12)
    question = GenerationRequest(
        messages=(system, ChatMessage("user", "What is the capital of Italy?")), max_tokens=12
    )
    fresh = [await local_backend.generate(question)]
    holder = endless_job(local_backend)
    assert local_backend._model is not None
    holder.prompt = local_backend._model.prompt_tokens(
        (system, ChatMessage("user", "Say x forever."))
    )
    engine.submit(holder)
    try:
        assert not isinstance(await first_piece(holder), BaseException)
        # The holder took the sequence that decoded `fresh` (the longest shared prefix), so no
        # free sequence holds this system prompt: the question must borrow it from the holder.
        lent = await local_backend.generate(question)
    finally:
        engine.cancel(holder)
    assert lent.usage.cached_tokens > 100
    assert lent.text == fresh[0].text


async def test_a_decode_failure_fails_its_batch_and_the_engine_goes_on(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = local_backend.engine
    real = engine._decode
    calls = 0

    def failing_once() -> int:
        nonlocal calls
        calls += 1
        return -3 if calls == 1 else real()

    monkeypatch.setattr(engine, "_decode", failing_once)
    with pytest.raises(BackendError) as raised:
        await local_backend.generate(ask("Say hi.", 4))
    assert not isinstance(raised.value, BackendUnavailable)  # a 502, not a 503
    assert (await local_backend.generate(ask("Say hi.", 4))).text
    assert engine.last_error == "llama_decode returned -3"


@pytest.fixture(scope="module")
def tiny_backend() -> Iterator[LocalBackend]:
    """One sequence, one request allowed to wait."""
    backend = LocalBackend(parallel=1, max_queue=1, context_window=512, threads=1)
    asyncio.run(backend.start())
    yield backend
    asyncio.run(backend.close())


async def test_beyond_the_queue_requests_are_refused_with_503(tiny_backend: LocalBackend) -> None:
    engine = tiny_backend.engine
    holder = endless_job(tiny_backend)
    queued = endless_job(tiny_backend, "Say hi.")
    queued.max_tokens = 2
    engine.submit(holder)
    try:
        await first_piece(holder)
        engine.submit(queued)  # waits for the one sequence
        with pytest.raises(BackendUnavailable) as refused:
            await tiny_backend.generate(ask("Say hi.", 2))
        assert refused.value.retry_after
        state = await tiny_backend.state()
        assert (state.sequences, state.sequences_in_use, state.queue_depth) == (1, 1, 1)
    finally:
        engine.cancel(holder)
    pieces = [await asyncio.wait_for(first_piece(queued), timeout=300) for _ in range(3)]
    assert [p.done for p in pieces if isinstance(p, Chunk)] == [False, False, True]
    assert isinstance(pieces[-1], Chunk) and pieces[-1].finish_reason == "length"


async def _drain(stream: AsyncIterator[Chunk]) -> str:
    return "".join([chunk.text async for chunk in stream])


async def test_stop_strings_end_the_reply_before_them(local_backend: LocalBackend) -> None:
    full = (await local_backend.generate(ask("Count from one to ten.", 40))).text
    assert "5" in full
    cut = await _drain(local_backend.stream(ask("Count from one to ten.", 40, stop=("5",))))
    assert cut == full[: full.index("5")]


@pytest.mark.parametrize("max_tokens", [1, 2, 4])
async def test_a_reply_cut_inside_a_character_does_not_end_in_a_replacement_character(
    local_backend: LocalBackend, max_tokens: int
) -> None:
    """An emoji is three of this model's tokens: a token limit inside it left its first bytes,
    decoded as U+FFFD at the end of the reply. Only whole characters are delivered."""
    assert local_backend._model is not None
    assert len(local_backend._model.tokenize("😀")) > 1
    job = Job(
        prompt=local_backend._model.prompt_tokens((ChatMessage("user", "Send emoji."),)),
        max_tokens=max_tokens,
        sampling=SamplingParams(grammar='root ::= "😀" root'),
        stop=(),
        outbox=Outbox(asyncio.get_running_loop()),
    )
    local_backend.engine.submit(job)
    pieces = []
    while not (piece := await asyncio.wait_for(first_piece(job), timeout=300)).done:
        assert isinstance(piece, Chunk)
        pieces.append(piece.text)
    assert piece.finish_reason == "length"
    text = "".join(pieces)
    assert set(text) <= {"😀"}, text  # no U+FFFD
    assert len(text) <= max_tokens // 2


async def test_a_reply_does_not_end_before_it_has_said_something(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a high temperature the model's first pick was sometimes its end token: an empty
    reply, and a 502 for a valid request. While the reply is blank the end tokens are left out
    of the choice. Here the greedy reply's first token is made an end token: without the rule
    the reply is empty; with it, the model says something else."""
    model, engine = local_backend._model, local_backend.engine
    assert model is not None
    first = model.tokenize((await local_backend.generate(ask("Name three fruits.", 1))).text)[0]
    is_end = model.is_end
    monkeypatch.setattr(model, "is_end", lambda token: token == first or is_end(token))
    banned = engine._blank_banned
    monkeypatch.setattr(engine, "_blank_banned", banned[banned != first])  # rule without `first`
    assert (await local_backend.generate(ask("Name three fruits.", 8))).text.strip() == ""
    monkeypatch.setattr(engine, "_blank_banned", np.append(banned, first))
    reply = await local_backend.generate(ask("Name three fruits.", 8))
    assert reply.text.strip()
    assert model.tokenize(reply.text)[0] != first


async def test_even_one_token_writes_something_visible(local_backend: LocalBackend) -> None:
    """A line break, a space or a part of an emoji as the only token was an empty reply: while
    the reply is blank, only tokens that write a visible character may be chosen."""
    model, engine = local_backend._model, local_backend.engine
    assert model is not None
    newline, space = model.tokenize("\n")[0], model.tokenize(" ")[0]
    partial = model.tokenize("😀")[0]  # an emoji is three byte tokens here
    end = next(token for token in range(model.n_vocab) if model.is_end(token))
    assert {newline, space, partial, end} <= set(engine._blank_banned.tolist())
    assert model.tokenize("Paris")[0] not in set(engine._blank_banned.tolist())
    for seed in range(12):
        request = ask("Reply with a blank line.", 1, temperature=1.9, seed=seed)
        assert (await local_backend.generate(request)).text.strip()


async def test_replies_without_a_seed_vary_and_a_seed_repeats_one(
    local_backend: LocalBackend,
) -> None:
    """Every request without a seed sampled with seed 0, so at temperature 1 the same prompt
    had the same reply each time; OpenAI's vary. Each now draws a fresh seed."""
    poem = ask("Write a short poem about the sea.", 24, temperature=1.0)
    replies = {(await local_backend.generate(poem)).text for _ in range(3)}
    assert len(replies) > 1, replies
    seeded = replace(poem, seed=20240601)
    first, second = [(await local_backend.generate(seeded)).text for _ in range(2)]
    assert first == second
