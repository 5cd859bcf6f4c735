"""Continuous batching of the embedded model: one scheduler thread, one `llama_decode` per step.

The scheduler thread owns the llama.cpp context; nothing else touches it. Each step it puts one
token of every generating sequence and a budget of prompt tokens of newly admitted requests into
one batch, decodes it, samples every sequence that has logits, and hands the step's pieces to
the event loop in one call. Each of the `parallel` sequences has the whole context window of its
own (`n_ctx = parallel x window`), and keeps its tokens after its request ends, so the next
request that shares a prefix with them (a system prompt, a conversation's history) only
processes the rest.

Memory is reused only within a cache scope (a tenant, or one OAuth user: `Job.scope`): between
scopes, only the prefix made of the server's own text (`Job.public`: its system prompt, the
same for every caller) is. Otherwise a caller could tell, from its cached tokens or its speed,
whether another had recently sent a prompt that begins as it guesses.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from gptactions.llm.base import BackendError, BackendUnavailable, Chunk, Usage
from gptactions.llm.llama_model import LlamaModel
from gptactions.llm.sampling import Candidates, GrammarError, Sampler, SamplingParams

log = logging.getLogger(__name__)

# Prompt tokens decoded per step at most, when one request has the engine to itself.
PROMPT_BUDGET = 256
# ... and when other sequences share the step: a long prompt then takes several steps instead of
# freezing the others' streams for all of its length, and a burst of new requests gets its first
# tokens one request after another (first come, first served) instead of all at once after the
# last prompt. Prompt tokens cost about as much in four steps as in one (each step reads the
# weights once more: a few milliseconds), so the budget is small.
SHARED_PROMPT_BUDGET = 64
# A sequence copies another's memory (all of it, then trimmed to the shared prefix) when that
# saves at least this many prompt tokens: copying costs about as much as decoding a token or
# two, and saves decoding the shared system prompt again in each sequence.
COPY_MIN_TOKENS = 16
_RATE_WINDOW = 60.0


class Outbox:
    """Where a request's pieces go: a queue read on the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()


@dataclass(eq=False)
class Job:
    """One request in the engine: its prompt, how to sample, and its progress."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    outbox: Outbox
    scope: str = ""
    """Who may reuse this job's memory (`GenerationRequest.cache_scope`)."""
    public: int = 0
    """How many leading prompt tokens are the server's own text, the same for every caller:
    the memory of another scope's sequence is reused up to here at most."""
    cancelled: bool = False
    # Progress, owned by the scheduler thread.
    fed: int = 0  # prompt tokens in the sequence's memory
    cached: int = 0
    next_token: int | None = None
    completion_tokens: int = 0
    held: str = ""
    blank: bool = True  # nothing but white space written yet: the reply may not end here
    sampler: Sampler | None = None
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    def usage_so_far(self) -> Usage:
        """The tokens a job cut short had used: the prompt's in its sequence's memory (none
        while it waited for a sequence), and those it generated (read from the event loop's
        side: at most a step behind the scheduler, which stops the job at its next step)."""
        return Usage(self.fed, self.completion_tokens, self.cached)


@dataclass(eq=False)
class Sequence:
    """One of the context's sequences: the tokens in its memory and the job using it."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    job: Job | None = None
    admitted_at: int = 0
    scope: str = ""
    """The scope of the job that last wrote its memory."""


@dataclass(frozen=True)
class EngineStats:
    """What `GET /status` shows of the engine."""

    sequences: int
    sequences_in_use: int
    queue_depth: int
    tokens_per_second: float


class BatchEngine:
    """Runs many requests on one llama.cpp context, batched step by step."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        parallel: int = 8,
        window: int = 2048,
        threads: int = 1,
        max_queue: int = 32,
        prompt_budget: int = PROMPT_BUDGET,
        shared_prompt_budget: int = SHARED_PROMPT_BUDGET,
    ) -> None:
        self.model = model
        self.parallel = parallel
        self.window = window
        self.max_queue = max_queue
        self.prompt_budget = prompt_budget
        self.shared_prompt_budget = min(shared_prompt_budget, prompt_budget)
        self.last_error: str | None = None
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = parallel * window
        params.n_seq_max = parallel
        # One KV stream per sequence: each has the full window, and a sequence's numbers do not
        # depend on its neighbours (a unified buffer, which would let sequences share a prefix
        # without recomputing it, changes greedy replies when other sequences run beside).
        params.kv_unified = False
        params.n_batch = params.n_ubatch = prompt_budget + parallel
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self._ctx: Any = llama_cpp.llama_init_from_model(model.model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context for the model")
        self._memory: Any = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._candidates = Candidates(model.n_vocab)
        self._blank_banned = np.array(
            [token for token in range(model.n_vocab) if not _writes_something(model, token)],
            dtype=np.int32,
        )
        """The tokens a reply may not take while it is blank (`_sample`)."""
        self._state: Any = (ctypes.c_uint8 * 0)()  # a sequence's memory, when one is copied
        self._sequences = [Sequence(seq_id) for seq_id in range(parallel)]
        self._waiting: deque[Job] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._admissions = 0
        self._produced: deque[tuple[float, int]] = deque()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gptactions-llm", daemon=True)
        self._thread.start()

    # The event loop's side

    def submit(self, job: Job) -> None:
        """Queue a job for the next free sequence; 503 when too many already wait."""
        with self._wakeup:
            if self._stopping:
                raise BackendUnavailable("the local model is shutting down", retry_after=5)
            if len(self._waiting) >= self.max_queue:
                raise BackendUnavailable(
                    f"the local model has {len(self._waiting)} requests waiting; try again shortly",
                    retry_after=2,
                )
            self._waiting.append(job)
            self._wakeup.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: its sequence is freed at the next step; a job still waiting
        leaves the queue at once, so that it no longer counts against `max_queue` (nor in the
        queue depth) while the running generations go on."""
        with self._wakeup:
            job.cancelled = True
            # Under the lock: the scheduler takes jobs off the queue under it too, so a job found
            # here has not been admitted. Jobs compare by identity (`eq=False`). ValueError: it
            # was admitted already (or never queued).
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            self._wakeup.notify()

    def stats(self) -> EngineStats:
        """Sequences in use, queue depth, generated tokens per second over the last minute."""
        now = time.monotonic()
        with self._wakeup:
            produced = sum(count for at, count in self._produced if at > now - _RATE_WINDOW)
            waiting = len(self._waiting)
        in_use = sum(1 for sequence in self._sequences if sequence.job is not None)
        span = min(_RATE_WINDOW, max(now - self._started, 1.0))
        return EngineStats(self.parallel, in_use, waiting, round(produced / span, 1))

    def close(self) -> None:
        """Stop the scheduler, fail what is left, and free the context."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join()
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    # The scheduler thread

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and not self._waiting and not self._busy():
                    self._wakeup.wait()
                if self._stopping:
                    break
                admitted = self._take_admissions()
            deliveries: list[tuple[Job, Chunk | BaseException]] = []
            try:
                for sequence, job in admitted:
                    self._admit(sequence, job, deliveries)
                self._free_cancelled()
                if self._busy():
                    self._step(deliveries)
            except Exception as exc:  # never lose the thread: fail what is running
                log.exception("the local model's scheduler failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                for sequence in self._sequences:
                    if sequence.job is not None:
                        self._fail(sequence, deliveries, "the local model failed")
            self._deliver(deliveries)
        self._shut_down()

    def _busy(self) -> bool:
        return any(sequence.job is not None for sequence in self._sequences)

    def _take_admissions(self) -> list[tuple[Sequence, Job]]:
        """Pair waiting jobs with free sequences, each with the longest prefix it may reuse
        (`_reusable`); of those that offer as much, the one used longest ago."""
        free = [sequence for sequence in self._sequences if sequence.job is None]
        taken: list[tuple[Sequence, Job]] = []
        while free and self._waiting:
            job = self._waiting.popleft()
            if job.cancelled:
                continue
            best = max(free, key=lambda s: (_reusable(s, job), -s.admitted_at))
            free.remove(best)
            best.job = job
            taken.append((best, job))
        return taken

    def _admit(
        self, sequence: Sequence, job: Job, deliveries: list[tuple[Job, Chunk | BaseException]]
    ) -> None:
        # At least the prompt's last token is decoded again: its logits start the reply.
        limit = len(job.prompt) - 1
        keep = min(_reusable(sequence, job), limit)
        donor = self._donor(sequence, job, keep)
        if donor is not None:
            # Another sequence (busy or not) holds a longer prefix of this prompt that the job
            # may reuse: its memory becomes this one's too, cut below to what is reused.
            if self._copy_memory(donor, sequence):
                sequence.tokens = list(donor.tokens)
                sequence.scope = donor.scope
            keep = min(_reusable(sequence, job), limit)
        if keep < len(sequence.tokens):
            # Nothing beyond the kept prefix is left in memory (another scope's tokens above
            # the public prefix, say): the job's own tokens are decoded after it.
            if not llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, keep, -1):
                llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
                keep = 0
            del sequence.tokens[keep:]
        sequence.scope = job.scope
        job.fed = job.cached = keep
        self._admissions += 1
        sequence.admitted_at = self._admissions
        try:
            job.sampler = Sampler(self.model.vocab, self.model.n_vocab, job.sampling)
        except GrammarError as exc:
            sequence.job = None
            deliveries.append((job, BackendError(f"the local model refused the request: {exc}")))

    def _copy_memory(self, donor: Sequence, sequence: Sequence) -> bool:
        """Copy the donor's memory into `sequence` (whose own is dropped either way), now.

        Through llama.cpp's per-sequence state: only the donor's cells are copied (a few MB for
        a few hundred tokens), where `llama_memory_seq_cp` between two streams copies the whole
        stream, used or not (47 MB of a 2,048-token window for this model), at the next decode.
        """
        size = int(llama_cpp.llama_state_seq_get_size(self._ctx, donor.seq_id))
        if len(self._state) < size:
            self._state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx, self._state, size, donor.seq_id)
        if written and llama_cpp.llama_state_seq_set_data(
            self._ctx, self._state, written, sequence.seq_id
        ):
            return True
        log.warning("copying sequence %s's memory to %s failed", donor.seq_id, sequence.seq_id)
        llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        sequence.tokens.clear()
        return False

    def _donor(self, sequence: Sequence, job: Job, have: int) -> Sequence | None:
        """The sequence whose memory holds the longest prefix of the job's prompt that the job
        may reuse (`_reusable`), when copying it saves at least COPY_MIN_TOKENS over what
        `sequence` already holds."""
        best: Sequence | None = None
        best_shared = have + COPY_MIN_TOKENS - 1
        for other in self._sequences:
            if other is sequence:
                continue
            shared = min(_reusable(other, job), len(job.prompt) - 1)
            if shared > best_shared:
                best, best_shared = other, shared
        return best

    def _free_cancelled(self) -> None:
        for sequence in self._sequences:
            job = sequence.job
            if job is not None and job.cancelled:
                # The memory keeps the tokens decoded so far: a valid prefix for the next request.
                self._release(sequence)

    def _release(self, sequence: Sequence) -> None:
        job, sequence.job = sequence.job, None
        if job is not None and job.sampler is not None:
            job.sampler.free()
            job.sampler = None

    def _step(self, deliveries: list[tuple[Job, Chunk | BaseException]]) -> None:
        """One batch: a token of each generating sequence, then prompt chunks; one decode."""
        batch = self._batch
        count = 0
        # Each sequence's tokens in the batch, and the index of its logits (-1: none yet).
        fed: list[tuple[Sequence, list[int], int]] = []

        def add(sequence: Sequence, token: int, position: int, logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = position
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = sequence.seq_id
            batch.logits[count] = logits
            count += 1

        # Generating tokens go in sequence order: in arrival order, which differs when requests
        # took sequences by shared prefix, a step cost ~30% more (bench/README.md). Prompts go
        # by arrival (first come, first served).
        generating = [s for s in self._sequences if s.job is not None]
        active = sorted(generating, key=lambda s: s.admitted_at)
        for sequence in generating:
            job = sequence.job
            assert job is not None
            if job.next_token is not None:
                add(sequence, job.next_token, len(sequence.tokens), True)
                fed.append((sequence, [job.next_token], count - 1))
        budget = self.prompt_budget if len(active) == 1 else self.shared_prompt_budget
        for sequence in active:
            job = sequence.job
            assert job is not None
            if job.fed >= len(job.prompt) or budget <= 0:
                continue
            chunk = job.prompt[job.fed : job.fed + budget]
            last = job.fed + len(chunk) == len(job.prompt)
            for offset, token in enumerate(chunk):
                position = len(sequence.tokens) + offset
                add(sequence, token, position, last and offset == len(chunk) - 1)
            fed.append((sequence, chunk, count - 1 if last else -1))
            budget -= len(chunk)
        batch.n_tokens = count
        status = self._decode()
        if status != 0:
            self.last_error = f"llama_decode returned {status}"
            log.error("llama_decode returned %s for a batch of %s tokens", status, count)
            for sequence, _, _ in fed:
                llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
                sequence.tokens.clear()
                self._fail(sequence, deliveries, "the local model failed to decode")
            return
        produced = 0
        for sequence, tokens, logits_at in fed:
            job = sequence.job
            assert job is not None
            sequence.tokens += tokens
            if job.fed < len(job.prompt):
                job.fed += len(tokens)
            job.next_token = None
            if logits_at >= 0:
                produced += 1
                self._sample(sequence, job, logits_at, deliveries)
        if produced:
            with self._wakeup:
                now = time.monotonic()
                self._produced.append((now, produced))
                while self._produced and self._produced[0][0] < now - _RATE_WINDOW:
                    self._produced.popleft()

    def _decode(self) -> int:
        return int(llama_cpp.llama_decode(self._ctx, self._batch))

    def _sample(
        self,
        sequence: Sequence,
        job: Job,
        index: int,
        deliveries: list[tuple[Job, Chunk | BaseException]],
    ) -> None:
        assert job.sampler is not None
        # A reply that is still blank takes a token that writes something: the end tokens, and
        # those that write nothing visible (white space, a part of a character, control
        # tokens), are left out of the choice (vLLM's min_tokens does the first). The model's
        # first pick, at a high temperature especially, was sometimes the end or a line break,
        # and with few tokens allowed the reply was empty: a 502 for a valid request. Leading
        # white space is stripped from every reply anyway.
        banned = self._blank_banned if job.blank else None
        try:
            token = job.sampler.sample(self._ctx, index, self._candidates, banned=banned)
        except GrammarError as exc:
            self._fail(sequence, deliveries, f"constrained decoding failed: {exc}")
            return
        if self.model.is_end(token):
            self._finish(sequence, deliveries, "stop")
            return
        job.sampler.accept_grammar(token)
        job.completion_tokens += 1
        text = job.held + job.decoder.decode(self.model.piece(token))
        emit, job.held, stopped = _split_at_stop(text, job.stop)
        if emit:
            job.blank = job.blank and emit.isspace()
            deliveries.append((job, Chunk(text=emit)))
        if stopped:
            job.held = ""
            self._finish(sequence, deliveries, "stop")
        elif job.completion_tokens >= job.max_tokens or len(sequence.tokens) + 1 >= self.window:
            self._finish(sequence, deliveries, "length")
        else:
            job.next_token = token

    def _finish(
        self, sequence: Sequence, deliveries: list[tuple[Job, Chunk | BaseException]], reason: str
    ) -> None:
        job = sequence.job
        assert job is not None
        # The token limit can fall inside a character (an emoji is three tokens here): its first
        # bytes are no character, and would end the reply as U+FFFD. Other bytes that are not
        # UTF-8 (the model's own) were already replaced as they came.
        cut = reason == "length"
        rest = job.held + ("" if cut else job.decoder.decode(b"", final=True))
        if rest:
            deliveries.append((job, Chunk(text=rest)))
        usage = Usage(len(job.prompt), job.completion_tokens, job.cached)
        deliveries.append((job, Chunk(text="", done=True, usage=usage, finish_reason=reason)))
        self._release(sequence)

    def _fail(
        self,
        sequence: Sequence,
        deliveries: list[tuple[Job, Chunk | BaseException]],
        message: str,
    ) -> None:
        job = sequence.job
        if job is not None:
            deliveries.append((job, BackendError(message)))
        self._release(sequence)

    def _deliver(self, deliveries: list[tuple[Job, Chunk | BaseException]]) -> None:
        """Hand the step's pieces to their event loops: one call per loop, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Chunk | BaseException]]] = {}
        for job, item in deliveries:
            if not job.cancelled:
                by_loop.setdefault(job.outbox.loop, []).append((job, item))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop is closed: its requests are gone
                for job, _ in items:
                    job.cancelled = True

    def _shut_down(self) -> None:
        deliveries: list[tuple[Job, Chunk | BaseException]] = []
        with self._wakeup:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            deliveries.append((job, BackendUnavailable("the local model stopped", retry_after=5)))
        for sequence in self._sequences:
            if sequence.job is not None:
                job = sequence.job
                self._release(sequence)
                deliveries.append(
                    (job, BackendUnavailable("the local model stopped", retry_after=5))
                )
        self._deliver(deliveries)


def _put_all(items: list[tuple[Job, Chunk | BaseException]]) -> None:
    for job, item in items:
        job.outbox.queue.put_nowait(item)


def _reusable(sequence: Sequence, job: Job) -> int:
    """How much of the sequence's memory the job may reuse: the prefix its tokens share with
    the job's prompt, and of a sequence another scope wrote, no more of it than the job's public
    prefix (tokens below it are the server's own text, the same for every caller, so their
    memory tells nothing of who else sent what)."""
    shared = _common_prefix(sequence.tokens, job.prompt)
    return shared if sequence.scope == job.scope else min(shared, job.public)


def _common_prefix(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    low, high = 0, limit  # binary search on equal prefixes: list slices compare in C
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _writes_something(model: Any, token: int) -> bool:
    """Whether `token` writes a visible character on its own: not an end or control token,
    not only white space, not a part of a UTF-8 character."""
    if model.is_end(token):
        return False
    try:
        text = model.piece(token).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not text.isspace() and text != ""


def _split_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(text to emit, text held back, whether a stop string ended it).

    Text that could be the start of a stop string is held back until the next piece tells.
    """
    if not stops:
        return text, "", False
    found = [text.find(stop) for stop in stops if stop and stop in text]
    if found:
        return text[: min(found)], "", True
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold], text[len(text) - hold :], False
