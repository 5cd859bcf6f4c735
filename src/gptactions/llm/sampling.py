"""Per-request token sampling on llama.cpp's sampler chains, with the grammar fast path.

A request's chain is: the request's logit bias, repetition penalty over the last tokens, OpenAI's
frequency and presence penalties over the whole reply so far, then greedy at temperature 0, or
the sampling defaults of llama-cpp-python (top-k 40, top-p 0.95 unless the request says,
min-p 0.05) with a seeded draw.
A grammar, when the request has one, is not part of the chain: the chain picks a token over the
raw logits, the grammar checks that one token, and only when it refuses does the grammar filter
the whole vocabulary before the chain picks again (what llama.cpp's server does; the grammar
over the whole vocabulary is the slow part). Only the engine's scheduler thread uses these.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np

PENALTY_LAST_N = 64

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class SamplingParams:
    """How one request's tokens are chosen."""

    temperature: float = 0.0
    repeat_penalty: float = 1.1
    seed: int = 0
    top_p: float = 0.95
    grammar: str | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_window: int = 0
    """The tokens the frequency and presence penalties count: the most the reply may have, so
    that they count all of it, as OpenAI's do."""
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def counts_tokens(self) -> bool:
        """Whether the frequency or presence penalty is on."""
        return bool(self.penalty_window and (self.frequency_penalty or self.presence_penalty))


class GrammarError(ValueError):
    """llama.cpp refused the grammar, or the grammar allows no token at this point."""


def grammar_parses(vocab: Any, grammar: str) -> bool:
    """Whether llama.cpp takes the grammar (why it does not is in its own log only)."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


class Candidates:
    """One reusable array of every token's logit, for the samplers to filter in place."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._pointer = self._data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        self.array: Any = llama_cpp.llama_token_data_array(self._pointer, n_vocab, -1, False)

    def load(self, ctx: Any, index: int) -> Any:
        """The logits of the batch's `index`-th token, unfiltered; returns the array's pointer."""
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        self._data["id"] = self._ids
        self._data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        self._data["p"] = 0.0
        self.array.data = self._pointer
        self.array.size = self.n_vocab
        self.array.selected = -1
        self.array.sorted = False
        return ctypes.byref(self.array)

    def ban(self, tokens: np.ndarray) -> None:
        """Leave `tokens` out of the loaded logits' choice."""
        self._data["logit"][tokens] = -np.inf

    def selected(self) -> int:
        """The token the last sampler chose."""
        return int(self.array.data[self.array.selected].id)

    def any_allowed(self) -> bool:
        """Whether some token is still allowed (a grammar sets the others to -inf)."""
        size = int(self.array.size)
        view = np.ctypeslib.as_array(
            ctypes.cast(self.array.data, ctypes.POINTER(ctypes.c_float)), shape=(size * 3,)
        )
        return bool(np.isfinite(view[1::3]).any())


class Sampler:
    """The sampler chain (and grammar) of one request; `free` releases them."""

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams) -> None:
        self.chain: Any = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        self.grammar: Any = None
        add = llama_cpp.llama_sampler_chain_add
        greedy = params.temperature <= 0
        if params.logit_bias:
            # First: the bias changes the logits every later sampler sees, as OpenAI's does.
            biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in params.logit_bias)
            )
            add(
                self.chain,
                llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases),
            )
        penalized = max(
            PENALTY_LAST_N if params.repeat_penalty != 1.0 else 0,
            params.penalty_window if params.counts_tokens else 0,
        )
        only_lowers = (
            params.repeat_penalty >= 1.0
            and params.frequency_penalty >= 0
            and params.presence_penalty >= 0
        )
        if greedy and penalized and only_lowers:
            # The penalties lower at most the `penalized` tokens last written, so the greedy
            # choice after them is among the `penalized` + 1 best before them: the same token,
            # without the penalties looking up the whole vocabulary (a third of the sampling
            # time). A negative penalty raises tokens, which may come from anywhere.
            add(self.chain, llama_cpp.llama_sampler_init_top_k(penalized + 1))
        if params.repeat_penalty != 1.0:
            add(
                self.chain,
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0
                ),
            )
        if params.counts_tokens:
            add(
                self.chain,
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    params.penalty_window,
                    1.0,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if greedy:
            add(self.chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(self.chain, llama_cpp.llama_sampler_init_top_k(40))
            add(self.chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            add(self.chain, llama_cpp.llama_sampler_init_min_p(0.05, 1))
            add(self.chain, llama_cpp.llama_sampler_init_temp(params.temperature))
            add(self.chain, llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))
        if params.grammar is not None:
            self.grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not self.grammar:
                self.free()
                raise GrammarError("llama.cpp could not parse the grammar")
        self._one: Any = llama_cpp.llama_token_data(0, 0.0, 0.0)
        self._single = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    def sample(
        self, ctx: Any, index: int, candidates: Candidates, *, banned: np.ndarray | None = None
    ) -> int:
        """Choose the next token from the batch's `index`-th logits (not yet accepted), never
        one of `banned` (without a grammar, which decides what may end for itself)."""
        if self.grammar is None and banned is not None:
            data = candidates.load(ctx, index)
            candidates.ban(banned)
            llama_cpp.llama_sampler_apply(self.chain, data)
            token = candidates.selected()
            self._accept_chain(token)
            return token
        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.chain, ctx, index))
        llama_cpp.llama_sampler_apply(self.chain, candidates.load(ctx, index))
        token = candidates.selected()
        if self._allows(token):
            self._accept_chain(token)
            return token
        llama_cpp.llama_sampler_apply(self.grammar, candidates.load(ctx, index))
        if not candidates.any_allowed():
            raise GrammarError("the grammar allows no token here")
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(candidates.array))
        token = candidates.selected()
        self._accept_chain(token)
        return token

    def accept_grammar(self, token: int) -> None:
        """Advance the grammar past a token it allowed (never an end token: that aborts)."""
        if self.grammar is not None:
            llama_cpp.llama_sampler_accept(self.grammar, token)

    def _accept_chain(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.chain, token)

    def _allows(self, token: int) -> bool:
        self._one.id = token
        self._one.logit = 1.0
        self._one.p = 0.0
        self._single.size = 1
        self._single.selected = -1
        self._single.sorted = False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._single))
        return not math.isinf(self._one.logit)

    def free(self) -> None:
        """Release the llama.cpp samplers (the chain frees the samplers added to it)."""
        chain, self.chain = self.chain, None
        grammar, self.grammar = self.grammar, None
        if chain:
            llama_cpp.llama_sampler_free(chain)
        if grammar:
            llama_cpp.llama_sampler_free(grammar)
