"""`python -m llama_cpp.server`, with the weights kept out of llama.cpp's extra buffer types on a
CPU where they crash (AMX: see `gptactions.llm.llama_model.extra_buffers_safe`).

llama-cpp-python's server has no option for it, so this wrapper sets the model parameter its
`Llama` reads, then runs the server module with the same arguments.
"""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp.llama_cpp as bindings

from gptactions.llm.llama_model import extra_buffers_safe

if not extra_buffers_safe():
    _defaults = bindings.llama_model_default_params

    def _without_extra_buffers() -> Any:
        params = _defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = _without_extra_buffers  # type: ignore[assignment]

runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
