"""Prompt templates render off the event loop, within time, output and memory bounds (issue 9).

A template is the operator's, but its parameters are the caller's: whatever the two make of it,
the server answers others meanwhile, and the call ends within the bounds with a 400.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gptactions.cli import cli
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.actions import ActionsFileError, registry_from_file
from gptactions.services.templates import (
    RenderLimits,
    TemplateFailed,
    TemplateLimitExceeded,
    TemplateRenderer,
)
from tests.conftest import ApiClient, running_app

API = "/api/v1/gpt"
WriteFile = Callable[[str, str], Path]


def _actions_yaml(**prompts: str) -> str:
    """An actions file with one action per prompt, each taking an integer `n` and a text `s`."""
    entries = [
        {
            "name": name,
            "description": f"The {name} template.",
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
            },
            "prompt": prompt,
        }
        for name, prompt in prompts.items()
    ]
    return json.dumps({"actions": entries})  # JSON is YAML


# The ways a template can cost without bound, each driven by the caller's `n`.
COSTLY = {
    "loops": "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}",
    "printing_loops": "{% for i in range(n) %}{% for j in range(n) %}{{ j }}{% endfor %}{% endfor %}",
    "repetition": "{{ 'x' * n }}",
    "repeated_text": "{{ s * n }}",
    "centered": "{{ s | center(n) }}",
    "format_width": "{{ '%*s' % (n, s) }}",
    "joined_range": "{{ range(n) | join(',') }}",
    "doubling": (
        "{% set ns = namespace(t='ab') %}{% for i in range(n) %}{% set ns.t = ns.t ~ ns.t %}"
        "{% endfor %}{{ ns.t | length }}"
    ),
}


@pytest.fixture
async def app(
    settings: Settings, fake: FakeBackend, write_file: WriteFile
) -> AsyncIterator[ApiClient]:
    """The app with the costly actions, a bound of 1 s and 10,000 characters."""
    configured = settings.model_copy(
        update={
            "actions_file": write_file("actions.yaml", _actions_yaml(**COSTLY, echo="{{ s }}")),
            "template_timeout": 1.0,
            "template_max_output": 10_000,
        }
    )
    async with running_app(configured, fake) as client:
        yield client


def _assert_bounded(response: Any) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "template_limit"
    assert [d["pointer"] for d in error["details"]] == ["/parameters"]


@pytest.mark.parametrize("name", sorted(COSTLY))
async def test_a_costly_template_is_a_400_and_the_model_is_not_asked(
    app: ApiClient, fake: FakeBackend, name: str
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = 64 if name == "doubling" else 10**9 if "repe" in name else 100_000
    response = await app.post(f"{API}/actions", {"action": name, "parameters": {"n": n, "s": "ab"}})
    _assert_bounded(response)
    assert fake.requests == []
    # The memory went to a worker process, never to the server's (ru_maxrss is in KiB).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(COSTLY)),
    n=st.integers(min_value=-(10**12), max_value=10**12),
    s=st.text(max_size=20),
)
async def test_any_parameters_end_in_a_reply_or_a_400(
    app: ApiClient, name: str, n: int, s: str
) -> None:
    response = await app.post(f"{API}/actions", {"action": name, "parameters": {"n": n, "s": s}})
    if response.status_code != 200:
        _assert_bounded(response)


async def test_the_server_answers_others_while_a_template_renders(
    settings: Settings, fake: FakeBackend, write_file: WriteFile
) -> None:
    configured = settings.model_copy(
        update={
            "actions_file": write_file("actions.yaml", _actions_yaml(loops=COSTLY["loops"])),
            "template_timeout": 600.0,
        }
    )
    async with running_app(configured, fake) as api:
        templates = api.runtime.templates
        slow = asyncio.create_task(
            api.post(f"{API}/actions", {"action": "loops", "parameters": {"n": 100_000}})
        )
        # Health checks, one after another, until the render is under way (each one a real
        # request: on the event loop they could not be answered while the template renders).
        for _ in range(10_000):
            assert (await api.http.get("/healthz")).status_code == 200
            if templates.rendering:
                break
        assert templates.rendering == 1
        for _ in range(5):
            assert (await api.http.get("/healthz")).status_code == 200
            assert (await api.get(f"{API}/status")).status_code == 200
        assert not slow.done()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await templates.close()  # kills the busy worker: nothing keeps running
        assert templates.rendering == 0


async def test_output_within_the_bounds_renders(app: ApiClient, fake: FakeBackend) -> None:
    response = await app.post(
        f"{API}/actions", {"action": "repetition", "parameters": {"n": 10_000}}
    )
    assert response.status_code == 200, response.text
    assert fake.requests[0].messages[-1].content == "x" * 10_000


async def test_a_lone_surrogate_reaches_the_worker_intact() -> None:
    renderer = TemplateRenderer(RenderLimits(timeout=30))
    try:
        assert await renderer.render(["<{{ s }}>", "{{ n }}"], {"s": "a\ud800b", "n": 1}) == [
            "<a\ud800b>",
            "1",
        ]
    finally:
        await renderer.close()


async def test_a_worker_that_passed_a_bound_is_replaced() -> None:
    renderer = TemplateRenderer(RenderLimits(timeout=0.5, max_output=100), workers=1)
    try:
        with pytest.raises(TemplateLimitExceeded, match=r"longer than 0\.5s"):
            await renderer.render([COSTLY["loops"]], {"n": 100_000})
        with pytest.raises(TemplateLimitExceeded, match="more memory"):
            await renderer.render(["{{ 'x' * n }}"], {"n": 10**9})
        with pytest.raises(TemplateLimitExceeded, match="longer than 100 characters"):
            await renderer.render(["{{ 'x' * n }}"], {"n": 101})
        with pytest.raises(TemplateFailed, match="'m' is undefined"):
            await renderer.render(["{{ m }}"], {})
        assert await renderer.render(["{{ 'x' * n }}"], {"n": 100}) == ["x" * 100]
    finally:
        await renderer.close()


# Templates that reach for another template: there is none, so they are refused at load time.
FORBIDDEN = {
    "include": "{% include 'other.txt' %}",
    "import": "{% import 'macros.txt' as m %}{{ m.x }}",
    "from": "{% from 'macros.txt' import x %}{{ x }}",
    "extends": "{% extends 'base.txt' %}",
    "nested": "A{% if s %}{% for i in range(2) %}{% include s %}{% endfor %}{% endif %}",
}


@hypothesis_settings(max_examples=30, deadline=None)
@given(
    which=st.sampled_from(sorted(FORBIDDEN)),
    before=st.text(alphabet="abc \n.", max_size=10),
    key=st.sampled_from(["prompt", "system"]),
)
def test_include_import_and_extends_are_refused_at_load(
    tmp_path_factory: pytest.TempPathFactory, which: str, before: str, key: str
) -> None:
    entry: dict[str, Any] = {
        "name": "reach",
        "description": "Reach for another template.",
        "parameters": {"type": "object", "properties": {"s": {"type": "string"}}},
        "prompt": "Hello {{ s }}",
    }
    entry[key] = before + FORBIDDEN[which]
    path = tmp_path_factory.mktemp("forbidden") / "actions.yaml"
    path.write_text(json.dumps({"actions": [entry]}), encoding="utf-8")
    with pytest.raises(ActionsFileError, match=f"action reach: '{key}' uses {{% "):
        registry_from_file(path)


def test_actions_check_reports_an_include(write_file: WriteFile) -> None:
    path = write_file("actions.yaml", _actions_yaml(reach="{% include 'x' %}"))
    result = CliRunner().invoke(cli, ["actions", "check", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path}: action reach: 'prompt' uses {{% include %}} (line 1); a prompt is one "
        "self-contained template and cannot include, import or extend another\n"
    )


def test_actions_run_reports_a_template_past_its_bounds(write_file: WriteFile) -> None:
    path = write_file("actions.yaml", _actions_yaml(repetition=COSTLY["repetition"]))
    result = CliRunner().invoke(
        cli,
        ["actions", "run", "repetition", "--param", "n=1000"],
        env={"GPTACTIONS_ACTIONS_FILE": str(path), "GPTACTIONS_TEMPLATE_MAX_OUTPUT": "100"},
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: the prompt of action repetition cannot be rendered with these parameters: "
        "the rendered prompt is longer than 100 characters\n"
    )
