"""docs/upstreams.md documents every key of a named backend and every upstream setting."""

from __future__ import annotations

from pathlib import Path

from pydantic.alias_generators import to_camel

from gptactions.config import BackendConfig

DOC = (Path(__file__).parents[2] / "docs" / "upstreams.md").read_text(encoding="utf-8")

UPSTREAM_SETTINGS = [
    "upstream_url",
    "upstream_api_key",
    "upstream_model",
    "upstream_timeout",
    "upstream_context_window",
    "upstream_max_concurrency",
    "fallback",
    "backends",
    "backends_file",
    "default_backend",
    "fallbacks",
]


def test_every_backend_key_is_documented() -> None:
    missing = [
        to_camel(name)
        for name in BackendConfig.model_fields
        if f"| `{to_camel(name)}` |" not in DOC
    ]
    assert missing == []


def test_every_upstream_setting_is_documented() -> None:
    missing = [name for name in UPSTREAM_SETTINGS if f"GPTACTIONS_{name.upper()}" not in DOC]
    assert missing == []


def test_every_server_kind_has_its_configuration() -> None:
    for server in (
        "### OpenAI",
        "### vLLM",
        "### Ollama",
        "### llama.cpp's server",
        "### LM Studio",
    ):
        assert server in DOC
    assert "curl -N" in DOC
