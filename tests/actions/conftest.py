"""Fixtures of the actions' tests: contexts over the fake backend and over the real model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gptactions.llm.fake import FakeBackend
from gptactions.llm.local import LocalBackend
from gptactions.llm.router import BackendRouter
from gptactions.services.actions import (
    ActionContext,
    ActionOutcome,
    ActionRegistry,
    registry_from_file,
)
from gptactions.services.templates import TemplateRenderer

HAIKU_YAML = """\
actions:
  - name: haiku
    description: Write a haiku about a topic.
    parameters:
      type: object
      required: [topic]
      properties:
        topic: {type: string, maxLength: 200}
    prompt: "Write a haiku about {{ topic }}."
    output: text
    maxTokens: 60
"""
"""The example of issue 4, exactly as written there."""


async def run_handler(
    registry: ActionRegistry, ctx: ActionContext, name: str, parameters: Mapping[str, Any]
) -> ActionOutcome:
    """An action's handler, run on parameters that pass its schema (as `ActionService` runs it)."""
    assert registry.validate(name, parameters) == []
    return await registry.get(name).handler(ctx, dict(parameters))


@pytest.fixture
def registry() -> ActionRegistry:
    """The built-in actions."""
    return registry_from_file(None)


@pytest.fixture(scope="session")
def templates() -> Iterator[TemplateRenderer]:
    """A renderer of prompt templates, its worker processes shared by the whole run."""
    renderer = TemplateRenderer()
    yield renderer
    renderer.shutdown()


@pytest.fixture
def fake_context(templates: TemplateRenderer) -> Callable[..., tuple[ActionContext, FakeBackend]]:
    """A context whose model answers with the given canned replies, in order."""

    def make(*replies: str | BaseException) -> tuple[ActionContext, FakeBackend]:
        backend = FakeBackend(replies)
        return ActionContext(BackendRouter([backend]), templates=templates), backend

    return make


@pytest.fixture(scope="module")
def model_context(local_backend: LocalBackend, templates: TemplateRenderer) -> ActionContext:
    """A context over the real embedded model, loaded once for the run."""
    return ActionContext(BackendRouter([local_backend]), templates=templates)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a file in the test's directory and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
