"""Settings to backends: the upstream shorthand, named backends, default and fallbacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gptactions.config import Settings
from gptactions.llm.factory import BackendConfigError, build_router
from gptactions.llm.local import LocalBackend
from gptactions.llm.openai import OpenAIBackend

KEY = "sk-factory-SECRET-9999"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GPTACTIONS_* variable or .env file of the machine leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("GPTACTIONS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_zero_configuration_is_the_embedded_model() -> None:
    router = build_router(Settings())
    assert router.names == ["local"] and router.default == "local"
    assert router.fallbacks == []
    assert isinstance(router.resolve(), LocalBackend)


def test_upstream_variables_make_the_default_with_local_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_API_KEY", KEY)
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_MODEL", "qwen2.5-7b")
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_TIMEOUT", "30")
    settings = Settings()
    router = build_router(settings)
    assert router.names == ["upstream", "local"]
    assert router.default == "upstream" and router.fallbacks == ["local"]
    upstream = router.resolve()
    assert isinstance(upstream, OpenAIBackend)
    assert upstream.model == "qwen2.5-7b" and upstream.total_timeout == 30
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(upstream)):
        assert KEY not in text


def test_fallback_none_turns_the_embedded_model_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("GPTACTIONS_FALLBACK", "none")
    router = build_router(Settings())
    assert router.names == ["upstream"] and router.fallbacks == []


def test_named_backends_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    backends = [
        {"name": "vllm", "url": "http://127.0.0.1:8000/v1", "model": "llama-3-70b",
         "apiKey": KEY, "maxConcurrency": 4, "contextWindow": 32768, "timeout": 90},
        {"name": "ollama", "url": "http://127.0.0.1:11434/v1", "model": "llama3.2"},
        {"name": "smol", "kind": "local"},
    ]  # fmt: skip
    monkeypatch.setenv("GPTACTIONS_BACKENDS", json.dumps(backends))
    monkeypatch.setenv("GPTACTIONS_DEFAULT_BACKEND", "ollama")
    monkeypatch.setenv("GPTACTIONS_FALLBACKS", "vllm,smol")
    settings = Settings()
    router = build_router(settings)
    assert router.names == ["vllm", "ollama", "smol"]
    assert router.default == "ollama" and router.fallbacks == ["vllm", "smol"]
    vllm = router.resolve("vllm")
    assert isinstance(vllm, OpenAIBackend)
    assert (vllm.max_concurrency, vllm.context_window, vllm.total_timeout) == (4, 32768, 90)
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()


def test_named_openai_backends_get_the_embedded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTACTIONS_BACKENDS", '[{"name": "a", "url": "http://127.0.0.1:1/v1"}]')
    router = build_router(Settings())
    assert router.names == ["a", "local"] and router.fallbacks == ["local"]


def test_backends_file_in_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "backends.yaml"
    path.write_text(
        "backends:\n"
        "  - name: lmstudio\n"
        "    url: http://127.0.0.1:1234/v1\n"
        "    model: qwen2.5-7b-instruct\n"
        "    readTimeout: 30\n"
        "  - name: local\n"
        "    kind: local\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("GPTACTIONS_BACKENDS_FILE", str(path))
    router = build_router(Settings())
    assert router.names == ["lmstudio", "local"] and router.fallbacks == ["local"]
    backend = router.resolve("lmstudio")
    assert isinstance(backend, OpenAIBackend) and backend.read_timeout == 30


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"GPTACTIONS_DEFAULT_BACKEND": "nope"}, "names no configured backend"),
        ({"GPTACTIONS_FALLBACKS": "nope"}, "not configured"),
        ({"GPTACTIONS_BACKENDS": '[{"name": "a"}]'}, "needs a url"),
        (
            {"GPTACTIONS_BACKENDS": '[{"name": "upstream", "url": "http://127.0.0.1:1/v1"}]',
             "GPTACTIONS_UPSTREAM_URL": "http://127.0.0.1:2/v1"},
            "two backends",
        ),
    ],
)  # fmt: skip
def test_inconsistent_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BackendConfigError, match=message):
        build_router(Settings())
