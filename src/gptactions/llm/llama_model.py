"""A GGUF model through llama-cpp-python's low-level bindings: weights, vocabulary, chat template.

Only what reads the model lives here (tokenizing, rendering the chat template, detokenizing);
the context that runs it belongs to the engine's scheduler thread (`llm/engine.py`). Reading
the vocabulary is safe from any thread, so requests are tokenized before they reach the engine.
"""

from __future__ import annotations

import ctypes
import logging
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from gptactions.llm.base import ChatMessage

log = logging.getLogger(__name__)

# ChatML, for a model file that carries no template of its own.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        # Importing the high-level module installs llama-cpp-python's log callback; at ERROR,
        # llama.cpp's chatter stays out of the server's output.
        import llama_cpp.llama

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        _backend_ready = True


def _cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU advertises Intel AMX (Sapphire Rapids and later)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return any(
        line.startswith("flags") and "amx_int8" in line.split() for line in text.splitlines()
    )


def extra_buffers_safe(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether llama.cpp may place weights in its "extra" CPU buffer types.

    On a CPU with AMX, a source build of llama.cpp (what pip builds) compiles its AMX kernels
    and moves Q4_0/Q4_1/Q8_0/K-quant weights into the AMX buffer; in llama-cpp-python 0.3.36
    `ggml_backend_amx_mul_mat` then crashes the process (SIGSEGV) on the first batch of more than
    one token, seen on Sapphire Rapids virtual machines. Without the extra buffers the weights
    stay in ordinary memory and the AVX-512 kernels run them. Elsewhere the extra buffers hold
    the repacked Q4_0/IQ4_NL weights that make AVX2 faster, so they stay on.
    """
    return not _cpu_has_amx(cpuinfo)


class LlamaModel:
    """The weights and vocabulary of one GGUF file, loaded once and shared by its contexts."""

    def __init__(self, path: Path) -> None:
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        if not extra_buffers_safe():
            params.use_extra_bufts = False
        self.path = path
        self.model: Any = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load the model file {path}")
        self.vocab: Any = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        template = llama_cpp.llama_model_chat_template(self.model, None)
        self._template = _compile(template.decode("utf-8") if template else CHATML)
        self._eos_text = self.piece(int(llama_cpp.llama_vocab_eos(self.vocab)), special=True)

    def close(self) -> None:
        """Free the weights; no context may use them afterwards."""
        model, self.model = self.model, None
        if model:
            llama_cpp.llama_model_free(model)

    # Tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """`text` as tokens. Only template text is parsed for control tokens (`special`):
        a user's `<|im_end|>` stays plain text and can never end a turn."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), buffer, capacity, False, special
        )
        if count < 0:
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buffer, capacity, False, special
            )
        return list(buffer[:count])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (possibly part of a UTF-8 character)."""
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -size, 0, special)
        return buffer.raw[:size]

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """The bytes of a run of tokens, control tokens left out."""
        return b"".join(self.piece(token) for token in tokens)

    def is_end(self, token: int) -> bool:
        """Whether the token ends a generation (end of turn, end of text)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def producible(self, text: str) -> bool:
        """Whether the vocabulary can write `text` (some byte sequences it cannot)."""
        return self.detokenize(self.tokenize(text)) == text.encode("utf-8")

    # The chat template

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The chat prompt of `messages`, ready for the assistant's reply.

        The model's own template is rendered with a marker in place of each message's text;
        the template's parts are tokenized with control tokens, the messages' text without.
        """
        return self.prompt_with_public(messages, 0)[0]

    def prompt_with_public(
        self, messages: Sequence[ChatMessage], public_messages: int
    ) -> tuple[list[int], int]:
        """The chat prompt of `messages` (as `prompt_tokens`), and how many of its leading
        tokens render only the first `public_messages` messages: the count right after the last
        of them is written (0 when `public_messages` is 0). A template that writes a later
        message first ends the public prefix there."""
        nonce = secrets.token_hex(8)
        markers = [f"\x1e{nonce}:{index}\x1e" for index in range(len(messages))]
        rendered = self._template.render(
            messages=[
                {"role": m.role, "content": marker}
                for m, marker in zip(messages, markers, strict=True)
            ],
            add_generation_prompt=True,
            bos_token="",
            eos_token=self._eos_text.decode("utf-8", errors="replace"),
            raise_exception=_raise,
        )
        tokens = [self._bos] if self._add_bos else []
        public = 0
        public_open = public_messages > 0
        # One pass over the rendered text (looking for every marker at each step cost a request
        # of 2,000 one-word messages 70 s of CPU).
        at = 0
        for found in re.finditer(f"\x1e{nonce}:(\\d+)\x1e", rendered):
            index = int(found.group(1))
            tokens += self.tokenize(rendered[at : found.start()], special=True)
            tokens += self.tokenize(messages[index].content, special=False)
            at = found.end()
            if public_open and index < public_messages:
                public = len(tokens)
            else:
                public_open = False
        if at < len(rendered):
            tokens += self.tokenize(rendered[at:], special=True)
        return tokens, public


def _raise(message: str) -> None:
    raise ValueError(f"the model's chat template refused the messages: {message}")


def _compile(template: str) -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )
    return environment.from_string(template)
