"""Who may use a code or revoke a token: only the client it was issued to (RFC 6749, 4.1.3;
RFC 7009, 2.1), and a stranger's failed attempt leaves the legitimate client's code and tokens
alone. On SQLite and PostgreSQL where the rule rests on a conditional UPDATE."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import delete

from gptactions.services.oauth import pkce_challenge
from gptactions.store.models import OAuthCode
from tests.api.test_oauth import (
    CALLBACK,
    PASSWORD,
    Client,
    authorize_params,
    basic,
    code_for,
    exchange,
    make_client,
)
from tests.conftest import ApiClient


@pytest.fixture
async def alice(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)


async def works(api: ApiClient, token: str) -> bool:
    answer = await api.get("/api/v1/gpt/status", key=token)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


async def test_a_client_cannot_revoke_another_clients_token(api: ApiClient, alice: None) -> None:
    """RFC 7009, 2.1: the server checks that the token was issued to the requesting client and
    refuses the request otherwise; 400 unauthorized_client (RFC 6749, 5.2's shape), and the
    token keeps working. Its own client still revokes it; an unknown token is still a 200."""
    owner, stranger = await make_client(api), await make_client(api)
    tokens = (await exchange(api, owner, await code_for(api, owner))).json()
    for token, hint in (
        (tokens["access_token"], "access_token"),
        (tokens["refresh_token"], "refresh_token"),
        (tokens["refresh_token"], None),
    ):
        form = {"token": token} | ({"token_type_hint": hint} if hint else {})
        refused = await api.http.post(
            "/oauth/revoke", data=form, headers=basic(stranger.id, stranger.secret)
        )
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "error": "unauthorized_client",
            "error_description": "the token was not issued to this client",
        }
        assert refused.headers["cache-control"] == "no-store"
        assert await works(api, tokens["access_token"])
    unknown = await api.http.post(
        "/oauth/revoke", data={"token": "gpto_nothing"}, headers=basic(stranger.id, stranger.secret)
    )
    assert unknown.status_code == 200
    own = await api.http.post(
        "/oauth/revoke",
        data={"token": tokens["access_token"]},
        headers=basic(owner.id, owner.secret),
    )
    assert own.status_code == 200
    assert not await works(api, tokens["access_token"])


async def test_a_failed_redemption_does_not_use_the_code_up(
    api: ApiClient, alice: None, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6749, 4.1.3's checks (the client, the redirect_uri, PKCE's verifier) refuse the
    presenter with invalid_grant, and leave the code to the client it was issued to: anyone who
    saw a code (a log, a history, a referrer) could otherwise make the user's sign-in fail.
    The checks cannot be guessed past: a verifier has 256 bits, a code lives 60 s."""
    caplog.set_level(logging.WARNING, logger="gptactions.services.oauth")
    owner, stranger = await make_client(api), await make_client(api)
    code = await code_for(api, owner)
    for answer in (
        await exchange(api, stranger, code),
        await exchange(api, owner, code, redirect_uri=CALLBACK + "x"),
        await exchange(api, owner, code, code_verifier="v" * 43),
    ):
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text
    assert "of another client was presented by the client" in caplog.text
    tokens = await exchange(api, owner, code)
    assert tokens.status_code == 200, tokens.text
    assert await works(api, tokens.json()["access_token"])

    # A public client: anyone may present its client_id, so only the verifier tells them apart.
    public = await api.runtime.oauth.create_client("CLI", (CALLBACK,), public=True)
    client = Client(public.info.id, "")
    verifier = "k" * 64
    pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    code = await code_for(api, client, scope="chat", **pkce)
    for wrong in ({}, {"code_verifier": "w" * 64}):
        answer = await exchange(api, client, code, **wrong)
        assert answer.json()["error"] == "invalid_grant", answer.text
    assert (await exchange(api, client, code, code_verifier=verifier)).status_code == 200


async def test_a_stranger_presenting_a_used_code_revokes_nothing(app_factory: Any) -> None:
    """A code presented again by its own client revokes what was issued from it (RFC 6749,
    4.1.2); presented by another client, or with another redirect_uri, it is refused and the
    legitimate pair stays, also once the code's row is forgotten."""
    async with app_factory() as api:
        await api.runtime.users.create("alice", PASSWORD)
        owner, stranger = await make_client(api), await make_client(api)
        code = await code_for(api, owner)
        tokens = (await exchange(api, owner, code)).json()
        refused = [
            await exchange(api, stranger, code),
            await exchange(api, owner, code, redirect_uri=CALLBACK + "x"),
        ]
        assert [a.json()["error"] for a in refused] == ["invalid_grant"] * 2
        assert await works(api, tokens["access_token"])
        async with api.runtime.database.session() as session:
            await session.execute(delete(OAuthCode))
        assert (await exchange(api, stranger, code)).json()["error"] == "invalid_grant"
        assert await works(api, tokens["access_token"])
        # Its own client presenting it again is a replay: the pair is revoked.
        assert (await exchange(api, owner, code)).json()["error"] == "invalid_grant"
        assert not await works(api, tokens["access_token"])
        await api.runtime.users.delete("alice")


async def test_a_malformed_code_verifier_is_an_invalid_request(api: ApiClient, alice: None) -> None:
    """RFC 7636, 4.1: a verifier is 43 to 128 of [A-Za-z0-9-._~]."""
    public = await api.runtime.oauth.create_client("CLI", (CALLBACK,), public=True)
    client = Client(public.info.id, "")
    verifier = "k" * 64
    pkce = {"code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    code = await code_for(api, client, scope="chat", **pkce)
    for bad in ("short", "k" * 129, "k" * 42 + " !"):
        answer = await exchange(api, client, code, code_verifier=bad)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", bad
    # RFC 6749, 3.1: a parameter without a value is one left out.
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    empty = await api.http.post(
        "/oauth/token", data=form | {"client_id": client.id, "code_verifier": ""}
    )
    assert empty.json() == {
        "error": "invalid_grant",
        "error_description": "code_verifier is required (PKCE)",
    }
    assert (await exchange(api, client, code, code_verifier=verifier)).status_code == 200


async def test_a_malformed_code_challenge_goes_back_to_the_client(api: ApiClient) -> None:
    """RFC 7636, 4.2: an S256 challenge is base64url, which no verifier's hash could match
    otherwise; the client hears of it at once rather than at the token endpoint."""
    client = await make_client(api)
    params = authorize_params(client, code_challenge="a" * 42 + "+", code_challenge_method="S256")
    answer = await api.http.get("/oauth/authorize", params=params)
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == ["xyz-state"]
