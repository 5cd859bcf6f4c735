"""Prompt templates cannot reach Python internals: the known Jinja2 sandbox escapes all fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from gptactions.llm.fake import FakeBackend
from gptactions.services.actions import (
    ActionContext,
    ActionsFileError,
    registry_from_file,
)
from gptactions.services.actions.userdefined import template_environment

from .conftest import run_handler

FakeContext = Callable[..., tuple[ActionContext, FakeBackend]]
WriteFile = Callable[[str, str], Path]

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ x.__class__.__base__.__subclasses__() }}",
    "{{ x.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ range.__self__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ config }}",
    "{{ request }}",
    "{{ x['__class__'] }}",
    "{{ x | attr('__class__') }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__.__mro__}'.format(x) }}",
    "{{ '%s' % x.__class__ }}",
    "{{ '{x.__class__}'.format_map({'x': x}) }}",
    "{{ x.append(1) }}",
    "{{ (x | list).pop() }}",
    "{% set y = x.update({'a': 1}) %}{{ y }}",
    "{{ x.__dict__ }}",
    "{{ x.mro() }}",
    "{{ range(10**9) | list }}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escapes_fail_to_render(source: str) -> None:
    environment = template_environment()
    try:
        template = environment.from_string(source)
        rendered = template.render(x={"k": [1, 2]})
    except (SecurityError, jinja2.TemplateError, TypeError, OverflowError):
        return  # refused: the outcome we want
    # Anything that renders must hold no trace of Python internals.
    for marker in ("class", "module", "function", "built-in", "subclass", "globals", "uid="):
        assert marker not in rendered, rendered
    assert rendered in ("", "{'k': [1, 2]}", "None")


def test_the_unsafe_globals_are_gone() -> None:
    globals_ = template_environment().globals
    assert {"lipsum", "cycler", "joiner"}.isdisjoint(globals_)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }} {{ x }}",
        "{{ x.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ x | attr('__class__') }}",
    ],
)
async def test_an_escaping_action_gets_no_answer_from_the_model(
    write_file: WriteFile, fake_context: FakeContext, source: str
) -> None:
    text = (
        "actions:\n  - name: escape\n    description: Try to escape.\n"
        "    parameters: {type: object, properties: {x: {type: string}}}\n"
        f"    prompt: {json.dumps(source)}\n"
    )
    registry = registry_from_file(write_file("escape.yaml", text))
    ctx, fake = fake_context()
    outcome = await run_handler(registry, ctx, "escape", {"x": "hello"})
    assert outcome.success is False
    assert outcome.result.startswith("the prompt of action escape failed to render")
    assert fake.requests == []


@pytest.mark.parametrize(
    "source", ["{{ config }}", "{{ lipsum.__globals__ }}", "{{ cycler.__init__.__globals__ }}"]
)
def test_escapes_through_unknown_names_are_refused_at_load(
    write_file: WriteFile, source: str
) -> None:
    text = (
        "actions:\n  - name: escape\n    description: Try to escape.\n"
        f"    prompt: {json.dumps(source)}\n"
    )
    with pytest.raises(ActionsFileError, match="action escape: 'prompt' uses"):
        registry_from_file(write_file("escape.yaml", text))
