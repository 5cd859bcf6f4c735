"""llama.cpp's flash attention on and off, for the embedded model's own batches.

Why `GPTACTIONS_MODEL_FLASH_ATTENTION` is `off` by default: the same decodes, in one process, on
contexts made as the engine makes them (8 sequences of the whole window each, the same threads),
one with llama.cpp's flash attention off, one on and one at llama.cpp's default (`auto`).
Each round times, on every context in turn: 8 new prompts of 16 tokens after 250 tokens of
context (a burst of new requests), one token for each of 8 sequences (a step of 8 replies), one
token of one sequence (a reply alone), and one token for each of 8 sequences at 1,500 tokens of
context (long conversations). Printed: the best and the median of the rounds, in milliseconds,
and each against `off`.
Run: .venv/bin/python bench/bench_attention.py   (--rounds, --threads)
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import llama_cpp
from common import ratio, report

from gptactions.llm.engine import _FLASH_ATTENTION
from gptactions.llm.llama_model import LlamaModel
from gptactions.llm.local import bundled_model_path, default_threads

PARALLEL = 8
WINDOW = 2048
BATCH = 264


class Context:
    """One llama.cpp context made like the engine's, with a reusable batch."""

    def __init__(self, model: LlamaModel, flash_attention: str, threads: int) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = PARALLEL * WINDOW
        params.n_seq_max = PARALLEL
        params.kv_unified = False
        params.n_batch = params.n_ubatch = BATCH
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        params.flash_attn_type = _FLASH_ATTENTION[flash_attention]
        self.ctx: Any = llama_cpp.llama_init_from_model(model.model, params)
        self.memory: Any = llama_cpp.llama_get_memory(self.ctx)
        self.batch: Any = llama_cpp.llama_batch_init(BATCH, 0, 1)

    def decode(self, items: list[tuple[int, list[int], int]]) -> None:
        """Decode (sequence, tokens, first position) items in one batch."""
        count = 0
        for seq, tokens, start in items:
            for offset, token in enumerate(tokens):
                self.batch.token[count] = token
                self.batch.pos[count] = start + offset
                self.batch.n_seq_id[count] = 1
                self.batch.seq_id[count][0] = seq
                self.batch.logits[count] = offset == len(tokens) - 1
                count += 1
        self.batch.n_tokens = count
        if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed")

    def fill(self, length: int) -> None:
        """Every sequence holds the same `length` tokens (decoded once, then copied)."""
        for seq in range(PARALLEL):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        for start in range(0, length, 256):
            size = min(256, length - start)
            self.decode([(0, [100 + (i * 7) % 900 for i in range(start, start + size)], start)])
        size = llama_cpp.llama_state_seq_get_size(self.ctx, 0)
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, state, size, 0)
        for seq in range(1, PARALLEL):
            if not llama_cpp.llama_state_seq_set_data(self.ctx, state, written, seq):
                raise RuntimeError("copying a sequence failed")

    def cut(self, length: int) -> None:
        """Every sequence back to its first `length` tokens."""
        for seq in range(PARALLEL):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, length, -1)


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    model = LlamaModel(bundled_model_path())
    modes = ["off", "on", "auto"]
    contexts = {mode: Context(model, mode, args.threads) for mode in modes}
    cases = ["8 prompts x 16 @250", "8 x 1 token @266", "1 x 1 token @267", "8 x 1 token @1500"]
    times: dict[str, dict[str, list[float]]] = {m: {c: [] for c in cases} for m in modes}
    for mode in modes:
        contexts[mode].fill(250)
    for _ in range(args.rounds):
        for mode in modes:  # the contexts take turns, so a noisy moment falls on all of them
            context, into = contexts[mode], times[mode]
            context.cut(250)
            prompts = [(s, [200 + s + i for i in range(16)], 250) for s in range(PARALLEL)]
            into[cases[0]].append(timed(partial(context.decode, prompts)))
            steps = [(s, [300 + s], 266) for s in range(PARALLEL)]
            into[cases[1]].append(timed(partial(context.decode, steps)))
            into[cases[2]].append(timed(partial(context.decode, [(0, [301], 267)])))
    for mode in modes:  # then long contexts, the same way
        contexts[mode].fill(1500)
    for _ in range(args.rounds):
        for mode in modes:
            context = contexts[mode]
            context.cut(1500)
            steps = [(s, [300 + s], 1500) for s in range(PARALLEL)]
            times[mode][cases[3]].append(timed(partial(context.decode, steps)))
    rows = []
    for case in cases:
        best = {mode: min(times[mode][case]) * 1000 for mode in modes}
        median = {mode: statistics.median(times[mode][case]) * 1000 for mode in modes}
        rows.append(
            [case]
            + [f"{best[m]:.1f}" for m in modes]
            + [f"{median[m]:.1f}" for m in modes]
            + [ratio(best[m], best["off"]) for m in modes[1:]]
        )
    header = (
        ["decode"]
        + [f"best ms {m}" for m in modes]
        + [f"median ms {m}" for m in modes]
        + [f"best {m} / off" for m in modes[1:]]
    )
    report(
        "attention",
        header,
        rows,
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "ms": {m: {c: [round(t * 1000, 2) for t in times[m][c]] for c in cases} for m in modes},
        },
    )


if __name__ == "__main__":
    main()
