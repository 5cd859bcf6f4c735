"""Status tells each key what it may know, upstreams are checked at start-up, and upstream
credentials stay out of errors, logs and status in every form (issue 9)."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gptactions.cli import cli
from gptactions.config import Settings
from gptactions.llm.base import BackendError, ChatMessage, GenerationRequest
from gptactions.llm.factory import BackendConfigError, build_router
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.redact import redact, secrets_of
from tests.conftest import ADMIN_KEY, ApiClient, running_app

from .faulty import FaultyUpstream

pytestmark = pytest.mark.upstream

API = "/api/v1/gpt"
PRIVATE = "the merger of Initech and Globex closes on Friday"


def _upstream(url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(name="upstream", base_url=url, max_retries=0, **options)


async def _backend_report(api: ApiClient, key: str) -> tuple[dict[str, Any], str]:
    response = await api.get(f"{API}/status", key=key)
    assert response.status_code == 200
    return response.json()["backends"][0], response.text


# Only admin keys see an upstream's error text


@pytest.mark.parametrize(
    ("scopes", "tenant"),
    [(("chat",), "acme"), (("chat",), "globex"), (("logs",), "globex"), (("actions",), "acme")],
)
async def test_an_upstream_error_quoting_a_prompt_reaches_admins_only(
    settings: Settings, faulty: FaultyUpstream, scopes: tuple[str, ...], tenant: str
) -> None:
    async with running_app(settings, _upstream(faulty.url("echo-prompt"), model="m")) as api:
        author = await api.key(scopes=("chat",), tenant="acme")
        body = {"userId": "alice", "message": PRIVATE}
        assert (await api.post(f"{API}/conversations", body, key=author)).status_code == 502

        other = await api.key(scopes=scopes, tenant=tenant)
        report, text = await _backend_report(api, other)
        assert PRIVATE not in text and "Initech" not in text
        assert report["lastError"] is None
        assert (report["reachable"], report["state"]) == (True, "failing")

        admin_report, _ = await _backend_report(api, ADMIN_KEY)
        assert PRIVATE in admin_report["lastError"]
        assert admin_report["state"] == "failing"


# Upstreams are checked at start-up, in the background


@pytest.mark.parametrize("model", [None, "m"])
async def test_a_dead_upstream_is_unreachable_before_any_request(
    settings: Settings, closed_url: str, model: str | None
) -> None:
    backend = _upstream(closed_url, model=model)
    async with running_app(settings, backend) as api:
        await backend.checked()
        report, _ = await _backend_report(api, ADMIN_KEY)
        assert (report["reachable"], report["state"]) == (False, "unreachable")
        assert "unreachable" in report["lastError"]
        assert report["model"] == (model or "default")


async def test_a_live_upstream_is_ok_and_named_before_any_request(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    backend = _upstream(faulty.url())
    async with running_app(settings, backend) as api:
        await backend.checked()
        report, _ = await _backend_report(api, ADMIN_KEY)
    assert (report["reachable"], report["state"], report["lastError"]) == (True, "ok", None)
    assert report["model"] == "faulty-model"
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in faulty.requests] == [("GET", "models")]


async def test_start_up_does_not_wait_for_the_check(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    # The upstream accepts the connection and stays silent for a minute; the check waits for it.
    backend = _upstream(faulty.url("hang-60"), model="m", probe_timeout=60)
    async with running_app(settings, backend) as api:
        report, _ = await _backend_report(api, ADMIN_KEY)
        assert (report["reachable"], report["state"]) == (False, "checking")
        assert (await api.http.get("/healthz")).status_code == 200
    # Closing the app stopped the check: the upstream saw its client leave.
    assert faulty.disconnects == 1


# Secrets in every form they may take in an upstream's answer or a log line

SECRETS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=8, max_size=40
)


def _b64(data: bytes, urlsafe: bool) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode("ascii")


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    secret=SECRETS,
    before=st.binary(max_size=5),
    after=st.binary(max_size=5),
    urlsafe=st.booleans(),
)
def test_a_secret_is_scrubbed_inside_any_base64_text(
    secret: str, before: bytes, after: bytes, urlsafe: bool
) -> None:
    secrets = secrets_of(SecretStr(secret), "https://api.example.com/v1")
    encoded = _b64(before + secret.encode() + after, urlsafe)
    scrubbed = redact(f"Authorization: Basic {encoded}", secrets)
    assert "***" in scrubbed
    # What survives of the encoding is a few characters at each end: less than 3 bytes of the
    # secret on either side, never enough to read it back.
    survived = scrubbed.removeprefix("Authorization: Basic ").split("***")
    assert sum(len(part) for part in survived) <= (len(before) + len(after) + 2) * 4 // 3 + 8


@hypothesis_settings(max_examples=200, deadline=None)
@given(secret=SECRETS, form=st.sampled_from(["raw", "quote", "quote_plus", "lower", "b64"]))
def test_a_secret_is_scrubbed_in_every_form(secret: str, form: str) -> None:
    shown = {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote_plus": quote_plus(secret, safe=""),
        "lower": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        "b64": _b64(secret.encode(), False).rstrip("="),
    }[form]
    text = f"upstream said: invalid key {shown} (check it)"
    # A secret that is also a word around it (`upstream`, found by this test) is rightly
    # scrubbed there too; the expected text below assumes the key appears once.
    assume(text.count(shown) == 1 and secret not in "upstream said: invalid key  (check it)")
    scrubbed = redact(text, secrets_of(SecretStr(secret), "https://api.example.com/v1"))
    assert scrubbed == "upstream said: invalid key *** (check it)"


async def test_an_upstream_echoing_the_key_url_encoded_is_scrubbed(
    faulty: FaultyUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sk-test/SECRET+key=42"
    backend = OpenAIBackend(name="up", base_url=faulty.url("echo-prompt"), api_key=key, model="m")
    for shown in (quote(key, safe=""), _b64(f"user:{key}".encode(), False)):
        request = GenerationRequest(messages=(ChatMessage("user", f"my key is {shown}"),))
        with pytest.raises(BackendError) as caught:
            await backend.generate(request)
        state = await backend.state()
        assert shown not in caught.value.message and shown not in str(state.last_error)
    await backend.close()
    assert quote(key, safe="") not in caplog.text


# Credentials in an upstream's URL are refused at start-up

USERINFO = st.tuples(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20),
    st.none() | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", max_size=30),
)


def _with_userinfo(user: str, password: str | None) -> str:
    userinfo = user if password is None else f"{user}:{password}"
    return f"https://{userinfo}@upstream.example.com:8443/v1"


def _refusal(url: str, where: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The start-up error for an upstream at `url`, configured the `where` way."""
    backends = [{"name": "gpu", "url": url, "model": "m"}]
    if where == "upstream":
        settings = Settings(upstream_url=url)
    elif where == "backends":
        settings = Settings(backends=backends)
    else:
        path = tmp_path_factory.mktemp("backends") / "backends.yaml"
        path.write_text(json.dumps({"backends": backends}), encoding="utf-8")
        settings = Settings(backends_file=path)
    with pytest.raises(BackendConfigError) as caught:
        build_router(settings)
    return str(caught.value)


@hypothesis_settings(max_examples=50, deadline=None)
@given(userinfo=USERINFO, where=st.sampled_from(["upstream", "backends", "file"]))
def test_credentials_in_an_upstream_url_are_refused_without_being_shown(
    tmp_path_factory: pytest.TempPathFactory, userinfo: tuple[str, str | None], where: str
) -> None:
    message = _refusal(_with_userinfo(*userinfo), where, tmp_path_factory)
    expected = (
        "GPTACTIONS_UPSTREAM_URL (https://upstream.example.com:8443/v1) holds credentials"
        if where == "upstream"
        else "the url of backend 'gpu' (https://upstream.example.com:8443/v1) holds"
    )
    assert message.startswith(expected)
    # The message does not depend on the credentials at all, so it cannot show any part of them
    # (a short password such as "8" may occur in the message's own text, ":8443").
    assert message == _refusal(_with_userinfo("someone", "secret"), where, tmp_path_factory)


def test_serve_refuses_credentials_in_the_upstream_url(isolated: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve"], env={"GPTACTIONS_UPSTREAM_URL": "http://bob:hunter2-secret@gpu:8000/v1"}
    )
    assert result.exit_code == 1
    assert "hunter2" not in result.output and "bob" not in result.output
    assert result.output == (
        "Error: GPTACTIONS_UPSTREAM_URL (http://gpu:8000/v1) holds credentials before its '@': "
        "they would be sent as HTTP Basic authentication and shown wherever the URL is; remove "
        "them from the URL and put the API key in GPTACTIONS_UPSTREAM_API_KEY\n"
    )


async def test_a_long_upstream_error_is_shortened_to_the_size_limit(
    settings: Settings, faulty: FaultyUpstream
) -> None:
    async with running_app(settings, _upstream(faulty.url("echo-prompt"), model="m")) as api:
        body = {"userId": "alice", "message": PRIVATE + " " + "x" * 2_000}
        assert (await api.post(f"{API}/conversations", body)).status_code == 502
        whole, text = await _backend_report(api, ADMIN_KEY)
        # The error is bounded where it is made; many backends could still pass the limit.
        assert len(whole["lastError"]) > 200 and "truncatedFields" not in whole
        limit = len(text) - 150
        api.runtime.settings.max_response_chars = limit
        report, text = await _backend_report(api, ADMIN_KEY)
        assert len(text) <= limit
        assert report["truncatedFields"] == ["lastError"] and "[truncated:" in report["lastError"]
        assert report["lastError"].startswith(whole["lastError"][:40])
