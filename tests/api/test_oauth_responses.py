"""What the OAuth endpoints answer beyond the grant itself: error descriptions RFC 6749's
clients can read, and no tokens for a user disabled between consent and exchange."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from tests.api.test_oauth import (
    PASSWORD,
    authorize_params,
    code_for,
    consent,
    exchange,
    hidden_fields,
    make_client,
)
from tests.conftest import ApiClient, running_app

# RFC 6749, 4.1.2.1 and 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*")


async def test_error_descriptions_hold_only_what_rfc_6749_allows(api: ApiClient) -> None:
    """A description that quotes what the client sent (a scope, a grant type, a resource)
    replaces the characters RFC 6749 forbids there: non-ASCII, `"` and `\\`."""
    client = await make_client(api)
    odd = 'é"\\'
    redirected = await api.http.get(
        "/oauth/authorize", params=authorize_params(client, scope=f"chat {odd}")
    )
    query = parse_qs(urlsplit(redirected.headers["location"]).query)
    assert query["error"] == ["invalid_scope"]
    assert DESCRIPTION.fullmatch(query["error_description"][0]), query
    assert query["error_description"][0].endswith("unknown scope(s): ???")
    form = {"client_id": client.id, "client_secret": client.secret}
    for extra in ({"grant_type": odd}, {"grant_type": "refresh_token", "resource": odd}):
        answer = await api.http.post("/oauth/token", data=form | extra)
        assert answer.status_code == 400, answer.text
        assert DESCRIPTION.fullmatch(answer.json()["error_description"]), answer.text
    duplicated = await api.http.post(
        "/oauth/token",
        content=f"{odd}=1&{odd}=2".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert DESCRIPTION.fullmatch(duplicated.json()["error_description"]), duplicated.text


async def test_registration_errors_too(settings: Settings) -> None:
    allowed = settings.model_copy(update={"oauth_dynamic_registration": True})
    async with running_app(allowed, FakeBackend()) as api:
        answer = await api.http.post("/oauth/register", json={"redirect_uris": ['http://é"/cb']})
        assert answer.json()["error"] == "invalid_redirect_uri"
        assert DESCRIPTION.fullmatch(answer.json()["error_description"]), answer.text


async def test_a_user_disabled_before_the_exchange_gets_no_tokens(api: ApiClient) -> None:
    await api.runtime.users.create("alice", PASSWORD)
    client = await make_client(api)
    code = await code_for(api, client)
    await api.runtime.users.disable("alice")
    answer = await exchange(api, client, code)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "invalid_grant", "error_description": "the user is disabled"}


async def test_every_authorization_response_names_its_issuer(api: ApiClient) -> None:
    """RFC 9207: the metadata says so, and each answer sent to the redirect URI (a code, a
    refusal, a denial) carries `iss`, the metadata's issuer, so that a client of several
    authorization servers can tell which one answered (a mix-up attack's defence)."""
    await api.runtime.users.create("alice", PASSWORD)
    meta = (await api.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["authorization_response_iss_parameter_supported"] is True
    client = await make_client(api)

    def iss(location: str) -> list[str]:
        return parse_qs(urlsplit(location).query)["iss"]

    refused = await api.http.get("/oauth/authorize", params=authorize_params(client, scope="x"))
    assert iss(refused.headers["location"]) == [meta["issuer"]]
    foreign = authorize_params(client, resource="https://elsewhere.example/")
    refused = await api.http.get("/oauth/authorize", params=foreign)
    assert iss(refused.headers["location"]) == [meta["issuer"]]
    for decision in ("allow", "deny"):
        page = await consent(api, authorize_params(client), "alice")
        decided = await api.http.post(
            "/oauth/authorize", data=hidden_fields(page.text) | {"decision": decision}
        )
        query = parse_qs(urlsplit(decided.headers["location"]).query)
        assert query["iss"] == [meta["issuer"]] and query["state"] == ["xyz-state"]
        assert ("code" if decision == "allow" else "error") in query
