"""The document a GPT imports: the server's own URL, only what some scopes can call, consequential
actions, /me described exactly, and the readiness checks (POST /openapi/check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gptactions.api import readiness
from gptactions.api.document import operation_scopes
from gptactions.api.forwarded import ForwardedHeaders, public_origin
from gptactions.api.openapi import build_document
from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.actions import build_registry, registry_from_file
from tests.conftest import ADMIN_KEY, ApiClient, running_app

HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
LOGS = "/api/v1/gpt/logs"


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


# --- servers: the URL the request came in on -------------------------------------------------


async def test_without_a_public_url_the_document_names_the_url_it_was_fetched_from(
    api: ApiClient,
) -> None:
    answer = await api.http.get("/openapi.json")
    document = answer.json()
    assert document["servers"] == [{"url": "http://testserver", "description": "This server"}]
    flow = document["components"]["securitySchemes"]["OAuth2"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == "http://testserver/oauth/authorize"
    assert flow["tokenUrl"] == "http://testserver/oauth/token"
    # The seed's placeholder host is nowhere: no client is sent to a host that does not exist.
    assert "yourdomain" not in answer.text
    validate(document)
    yaml_document = yaml.safe_load((await api.http.get("/openapi.yaml")).text)
    assert yaml_document["servers"] == document["servers"]


async def test_proxy_headers_of_an_untrusted_peer_are_ignored(api: ApiClient) -> None:
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Prefix": "/x",
        "Forwarded": "for=1.2.3.4;proto=https;host=evil.example",
    }
    document = (await api.http.get("/openapi.json", headers=headers)).json()
    assert document["servers"][0]["url"] == "http://testserver"
    meta = (await api.http.get("/.well-known/oauth-authorization-server", headers=headers)).json()
    assert meta["issuer"] == "http://testserver"


async def test_a_trusted_proxy_sets_scheme_host_and_prefix(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        api_key=ADMIN_KEY,
        trusted_proxies=["127.0.0.0/8", "::1"],
    )
    async with running_app(settings, FakeBackend()) as api:
        forwarded = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "gpt.example.org",
            "X-Forwarded-Prefix": "/gpt/",
        }
        document = (await api.http.get("/openapi.json", headers=forwarded)).json()
        assert document["servers"] == [
            {"url": "https://gpt.example.org/gpt", "description": "This server"}
        ]
        meta = await api.http.get("/.well-known/oauth-authorization-server", headers=forwarded)
        assert meta.json()["token_endpoint"] == "https://gpt.example.org/gpt/oauth/token"
        rfc7239 = {"Forwarded": 'for="[2001:db8::1]:443";proto=https;host=api.example.net'}
        document = (await api.http.get("/openapi.json", headers=rfc7239)).json()
        assert document["servers"][0]["url"] == "https://api.example.net"


async def test_the_public_url_wins_over_the_request(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        api_key=ADMIN_KEY,
        public_url="https://gpt.example.org/",
        servers=["https://sandbox.example.org"],
        trusted_proxies=["127.0.0.1"],
    )
    async with running_app(settings, FakeBackend()) as api:
        headers = {"X-Forwarded-Host": "other.example"}
        document = (await api.http.get("/openapi.json", headers=headers)).json()
        assert [s["url"] for s in document["servers"]] == [
            "https://gpt.example.org",
            "https://sandbox.example.org",
        ]


async def test_the_client_address_comes_from_a_trusted_proxy_only() -> None:
    """ForwardedHeaders in a tiny app: the client is the rightmost address not a proxy's."""
    settings = Settings(trusted_proxies=["10.0.0.0/8"])

    async def echo(request: Request) -> JSONResponse:
        client = request.client.host if request.client else None
        return JSONResponse({"client": client, "origin": public_origin(request, settings)})

    app = ForwardedHeaders(Starlette(routes=[Route("/", echo)]), trusted=settings.trusted_proxies)

    async def call(peer: str, headers: dict[str, str]) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app, client=(peer, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answer: dict[str, Any] = (await client.get("/", headers=headers)).json()
            return answer

    headers = {
        "X-Forwarded-For": "203.0.113.7, 10.0.0.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "gpt.example.org:8443",
    }
    trusted = await call("10.1.2.3", headers)
    assert trusted == {"client": "203.0.113.7", "origin": "https://gpt.example.org:8443"}
    stranger = await call("192.0.2.1", headers)
    assert stranger == {"client": "192.0.2.1", "origin": "http://testserver"}
    # A host with characters no host has is not believed.
    odd = await call("10.1.2.3", {"X-Forwarded-Host": "a/b@c"})
    assert odd["origin"] == "http://testserver"


def test_trusted_proxies_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTACTIONS_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1, ::1")
    assert [str(n) for n in Settings().trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    monkeypatch.setenv("GPTACTIONS_TRUSTED_PROXIES", "not-an-address")
    with pytest.raises(ValueError, match="not-an-address"):
        Settings()


# --- scopes: only what a GPT's key can call ----------------------------------------------------


async def test_scopes_leave_out_what_they_cannot_call(api: ApiClient) -> None:
    full = (await api.http.get("/openapi.json")).json()
    gpt = (await api.http.get("/openapi.json", params={"scopes": "chat,actions"})).json()
    validate(gpt)  # no reference left dangling by what was dropped
    assert LOGS in full["paths"] and LOGS not in gpt["paths"]
    assert {("/api/v1/gpt/conversations", "post"), ("/api/v1/gpt/respond", "post")} <= (
        operations(gpt)
    )
    assert ("/api/v1/gpt/actions", "post") in operations(gpt)
    assert gpt["info"]["x-scopes"] == ["chat", "actions"]
    # Every operation left is one a key with just these scopes gets past the scope check for.
    key = await api.key(scopes=("chat", "actions"), name="gpt")
    assert (await api.get(LOGS, key=key)).status_code == 403
    for path, method in operations(gpt):
        assert operation_scopes()[(path, method)] <= {"chat", "actions"}, (path, method)
    # Logs only: no conversations, no actions.
    reader = (await api.http.get("/openapi.json", params={"scopes": "logs"})).json()
    assert LOGS in reader["paths"] and "/api/v1/gpt/conversations" not in reader["paths"]
    assert "/api/v1/gpt/actions" not in reader["paths"]
    validate(reader)
    # Admin may call everything a GPT may: the OpenAI-compatible API is for OpenAI's clients
    # (no 45 s deadline, no 100,000-character cap), in no GPT's document.
    admin = (await api.http.get("/openapi.yaml", params={"scopes": "admin"})).text
    assert operations(yaml.safe_load(admin)) == {
        (path, method) for path, method in operations(full) if not path.startswith("/v1/")
    }
    assert not [path for path in gpt["paths"] if path.startswith("/v1/")]
    # A GPT given a key has that one way in; ChatGPT never asks for Server-Sent Events.
    assert list(gpt["components"]["securitySchemes"]) == ["ApiKeyAuth"]
    assert gpt["security"] == [{"ApiKeyAuth": []}]
    assert "text/event-stream" in str(full["paths"]["/api/v1/gpt/conversations"])
    assert "text/event-stream" not in json.dumps(gpt["paths"])


async def test_an_oauth_gpts_document_has_one_way_in_and_needs_no_user_id(api: ApiClient) -> None:
    """A GPT's action has one authentication type; and ChatGPT fills every required field, so
    a required userId would be guessed, and any guess but the user's own name is a 403."""
    gpt = (
        await api.http.get("/openapi.json", params={"scopes": "chat,actions", "auth": "oauth"})
    ).json()
    validate(gpt)
    assert list(gpt["components"]["securitySchemes"]) == ["OAuth2"]
    assert gpt["security"] == [{"OAuth2": []}]
    # The scopes to sign in with are those the document was cut for (`info.x-scopes`).
    flow = gpt["components"]["securitySchemes"]["OAuth2"]["flows"]["authorizationCode"]
    assert list(flow["scopes"]) == gpt["info"]["x-scopes"] == ["chat", "actions"]
    uncut = (await api.http.get("/openapi.json", params={"auth": "oauth"})).json()
    uncut_flow = uncut["components"]["securitySchemes"]["OAuth2"]["flows"]["authorizationCode"]
    assert list(uncut_flow["scopes"]) == ["chat", "actions", "logs"]
    schemas = gpt["components"]["schemas"]
    for name in ("ConversationRequest", "ActionRequest"):  # every body a model writes
        assert "userId" not in schemas[name]["properties"], name  # not even optional
    assert schemas["ConversationRequest"]["required"] == ["message"]
    # Nor in a query: a token sees only its user's logs.
    with_logs = {"scopes": "chat,actions,logs", "auth": "oauth"}
    logs = (await api.http.get("/openapi.json", params=with_logs)).json()
    validate(logs)
    offered = [p["name"] for p in logs["paths"]["/api/v1/gpt/logs"]["get"]["parameters"]]
    assert "userId" not in offered and "limit" in offered
    # What the server answers is described as it is: the advice is for requests.
    everything = (await api.http.get("/openapi.json", params={"auth": "oauth"})).json()
    for name in ("MeResponse", "MyDataExport", "LogItem"):
        user = everything["components"]["schemas"][name]["properties"]["userId"]
        assert "Leave it out" not in user.get("description", ""), name
    keyed = (await api.http.get("/openapi.json", params={"scopes": "chat,actions"})).json()
    assert keyed["components"]["schemas"]["ConversationRequest"]["required"] == [
        "userId",
        "message",
    ]


async def test_a_keys_document_offers_a_users_data_only_with_logs(api: ApiClient) -> None:
    """exportMyData and deleteMyData take an API key with `logs` (and a userId); an OAuth token
    is its own user and needs no scope for them. A document cut for a key's scopes offers them
    only when the key could call them."""

    def operation_ids(document: dict[str, Any]) -> set[str]:
        return {
            document["paths"][path][method]["operationId"] for path, method in operations(document)
        }

    user_data = {"exportMyData", "deleteMyData"}
    gpt = (await api.http.get("/openapi.json", params={"scopes": "chat,actions"})).json()
    validate(gpt)
    assert "getMe" in operation_ids(gpt) and not user_data & operation_ids(gpt)
    reader = (await api.http.get("/openapi.json", params={"scopes": "chat,logs"})).json()
    assert user_data <= operation_ids(reader)
    # As the server has it: refused to a key without logs, answered to one with it.
    for scopes, status in ((("chat", "actions"), 403), (("chat", "logs"), 200)):
        bearer = {"Authorization": f"Bearer {await api.key(scopes=scopes, name='gpt')}"}
        for method, path in (("GET", "/api/v1/gpt/me/export"), ("DELETE", "/api/v1/gpt/me/data")):
            answer = await api.http.request(method, path, params={"userId": "ann"}, headers=bearer)
            assert answer.status_code == status, (scopes, path, answer.text)
    # Cut for a GPT's OAuth token with the same scopes (`auth=oauth`), they stay.
    query = {"scopes": "chat,actions", "auth": "oauth"}
    for_a_token = (await api.http.get("/openapi.json", params=query)).json()
    validate(for_a_token)
    assert operation_ids(for_a_token) - operation_ids(gpt) == user_data
    # A key must name the user (a 400 without userId); a token is its own user, and any other
    # name is a 403: its document does not offer the parameter.
    for path, method in (("/api/v1/gpt/me/export", "get"), ("/api/v1/gpt/me/data", "delete")):
        (user_id,) = [
            p for p in reader["paths"][path][method]["parameters"] if p["name"] == "userId"
        ]
        assert user_id["required"] is True, path
        offered = for_a_token["paths"][path][method].get("parameters", [])
        assert "userId" not in [p["name"] for p in offered], path
    everything = (await api.http.get("/openapi.json", params={"auth": "oauth"})).json()
    assert [
        p["name"] for p in everything["paths"]["/api/v1/gpt/me/export"]["get"]["parameters"]
    ] == ["cursor"]
    bearer = {"Authorization": f"Bearer {await api.key(scopes=('logs',), name='reader')}"}
    assert (await api.http.get("/api/v1/gpt/me/export", headers=bearer)).status_code == 400
    assert (await api.http.get("/openapi.yaml", params=query)).status_code == 200
    wrong = await api.http.get("/openapi.json", params={"scopes": "chat", "auth": "password"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["pointer"] == "/auth"


@pytest.mark.parametrize("scopes", ["chat,root", "", " , ", "LOGS"])
async def test_an_unknown_scope_is_a_400_in_the_error_shape(api: ApiClient, scopes: str) -> None:
    answer = await api.http.get("/openapi.json", params={"scopes": scopes})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert "chat, actions, logs, admin" in error["message"]
    assert error["details"][0]["pointer"] == "/scopes"


# --- consequential actions ---------------------------------------------------------------------


def test_user_defined_actions_may_be_consequential(tmp_path: Path) -> None:
    def trigger(registry: Any) -> dict[str, Any]:
        document = build_document(Settings(), registry, ["local"])
        return document["paths"]["/api/v1/gpt/actions"]["post"]  # type: ignore[no-any-return]

    builtins = build_registry(Settings())
    document = build_document(Settings(), builtins, ["local"])
    for path, method in operations(document):
        operation = document["paths"][path][method]
        if path.startswith("/api/v1/gpt") and method == "get":
            assert operation["x-openai-isConsequential"] is False, path
    assert document["paths"]["/api/v1/gpt/me/data"]["delete"]["x-openai-isConsequential"] is True
    assert trigger(builtins)["x-openai-isConsequential"] is False

    actions = tmp_path / "actions.yaml"
    actions.write_text(
        "actions:\n"
        "  - name: order\n"
        "    description: Orders a pizza.\n"
        "    consequential: true\n"
        "    prompt: Order a pizza.\n"
        "  - name: greet\n"
        "    description: Says hello.\n"
        "    prompt: Say hello.\n",
        encoding="utf-8",
    )
    registry = registry_from_file(actions)
    assert trigger(registry)["x-openai-isConsequential"] is True
    schemas = build_document(Settings(), registry, ["local"])["components"]["schemas"]
    assert "asks the user" in schemas["ActionRequest_order"]["description"]
    assert "asks the user" not in schemas["ActionRequest_greet"]["description"]

    actions.write_text(
        "actions:\n  - {name: bad, description: x, consequential: yes please, prompt: x}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="'consequential' must be true or false"):
        registry_from_file(actions)


# --- /me described exactly ---------------------------------------------------------------------


async def test_me_answers_are_described_property_by_property(api: ApiClient) -> None:
    document = (await api.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    def described(path: str, method: str) -> dict[str, Any]:
        answer = document["paths"][path][method]["responses"]["200"]
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        schema: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return schema

    key = await api.key(name="me-test")
    await api.post("/api/v1/gpt/conversations", {"userId": "ann", "message": "hi"}, key=key)
    me = (await api.get("/api/v1/gpt/me", key=key)).json()
    exported = (await api.get("/api/v1/gpt/me/export", key=key, params={"userId": "ann"})).json()
    erased = (
        await api.http.delete(
            "/api/v1/gpt/me/data",
            params={"userId": "ann"},
            headers={"Authorization": f"Bearer {key}"},
        )
    ).json()
    for path, method, answer in (
        ("/api/v1/gpt/me", "get", me),
        ("/api/v1/gpt/me/export", "get", exported),
        ("/api/v1/gpt/me/data", "delete", erased),
    ):
        schema = described(path, method)
        assert set(schema["properties"]) == set(answer), path
        assert set(schema["required"]) <= set(answer), path
    item = schemas["MyDataExport"]["properties"]["interactions"]["items"]["$ref"]
    # truncatedFields only when a row was shortened to fit, as in /logs.
    row = set(exported["interactions"][0])
    assert "truncatedFields" not in row
    assert set(schemas[item.rsplit("/", 1)[1]]["properties"]) == row | {"truncatedFields"}
    assert exported["conversations"][0].keys() == {"conversationId", "createdAt", "updatedAt"}
    assert erased == {"userId": "ann", "deletedConversations": 1, "deletedInteractions": 1}


# --- readiness ---------------------------------------------------------------------------------


async def check(api: ApiClient, document: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await api.http.post("/openapi/check", content=json.dumps(document), headers=headers)


def rules(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [finding["rule"] for finding in answer.json()["findings"]]


async def test_the_served_document_passes_once_configured(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        api_key=ADMIN_KEY,
        public_url="https://gpt.example.org",
        privacy_contact="privacy@example.org",
    )
    async with running_app(settings, FakeBackend()) as api:
        gpt = (await api.http.get("/openapi.json", params={"scopes": "chat,actions"})).json()
        answer = await check(api, gpt)
        assert rules(answer) == []
        assert [r["rule"] for r in answer.json()["rules"]] == [r for r, _ in readiness.RULES]
        full = (await api.http.get("/openapi.json")).json()
        assert rules(await check(api, full)) == ["logs"]
        # Signed in, /logs answers its user's own interactions only: nothing to warn of.
        params = {"scopes": "chat,actions,logs", "auth": "oauth"}
        signed_in = (await api.http.get("/openapi.json", params=params)).json()
        assert "/api/v1/gpt/logs" in signed_in["paths"]
        assert rules(await check(api, signed_in)) == []


async def test_an_unconfigured_server_is_told_what_to_set(api: ApiClient) -> None:
    document = (await api.http.get("/openapi.json")).json()
    answer = await check(api, document)
    found = {f["rule"]: f for f in answer.json()["findings"]}
    assert set(found) == {"servers", "logs", "privacy"}
    assert "GPTACTIONS_PUBLIC_URL" in found["servers"]["fix"]
    assert "scopes=chat,actions" in found["logs"]["fix"]
    assert "GPTACTIONS_PRIVACY_CONTACT" in found["privacy"]["fix"]


async def test_keys_holding_logs_are_flagged(api: ApiClient) -> None:
    document = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}}
    wide = await api.key(name="gpt-wide")  # the default scopes include logs
    narrow = await api.key(name="gpt-narrow", scopes=("chat", "actions"))
    as_admin = [f["message"] for f in (await check(api, document, ADMIN_KEY)).json()["findings"]]
    assert any("'gpt-wide' has the `logs` scope" in m for m in as_admin)
    assert not any("gpt-narrow" in m for m in as_admin)
    # A key that is not admin hears about itself only; anonymous callers about no key.
    own = [f["message"] for f in (await check(api, document, wide)).json()["findings"]]
    assert any("'gpt-wide'" in m for m in own)
    assert "gpt-" not in (await check(api, document, narrow)).text
    assert "gpt-wide" not in (await check(api, document)).text
    assert (await check(api, document, "gpta_not_a_key")).status_code == 401


async def test_document_rules_find_what_chatgpt_refuses(api: ApiClient) -> None:
    long_list = {
        "type": "array",
        "maxItems": 1000,
        "items": {"type": "string", "maxLength": 500},
    }
    document = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://a.example"}, {"url": "https://b.example"}],
        "paths": {
            "/a": {
                "post": {
                    "operationId": "same",
                    "summary": "x" * 301,
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": long_list}},
                        }
                    },
                },
                "get": {
                    "operationId": "same",
                    "parameters": [
                        {
                            "name": "tags",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                },
            }
        },
        "components": {"schemas": {"Loose": {"type": "object"}}},
    }
    found = rules(await check(api, document))
    for rule in ("servers", "operationId", "lengths", "consequential", "explode", "properties"):
        assert rule in found, rule
    size = [f for f in (await check(api, document)).json()["findings"] if f["rule"] == "size"]
    assert size and "503,002 characters" in size[0]["message"]
    assert size[0]["pointer"] == "/paths/~1a/post/responses/200"


@pytest.mark.parametrize(
    ("body", "status"),
    [("[1, 2]", 400), ("{not json", 400), ('"a string"', 400), ("[" * 100_000, 400)],
)
async def test_a_body_that_is_no_document_is_a_400(api: ApiClient, body: str, status: int) -> None:
    answer = await api.http.post("/openapi/check", content=body)
    assert answer.status_code == status
    assert set(answer.json()["error"]) == {"code", "message", "details"}


async def test_the_check_reads_bounded_bodies(api: ApiClient) -> None:
    limit = api.runtime.settings.max_body_bytes
    answer = await api.http.post("/openapi/check", content=b" " * (limit + 1))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_settings_rules_find_long_timeouts_and_long_answers() -> None:
    settings = Settings(
        upstream_url="http://127.0.0.1:9/v1",
        upstream_timeout=60,
        template_timeout=50,
        request_deadline=44,
        max_response_chars=250_000,
        privacy_contact="privacy@example.org",
    )
    found = readiness.check_settings(settings)
    messages = " ".join(f.message for f in found)
    assert [f.rule for f in found] == ["timeouts", "timeouts", "size"]
    assert "GPTACTIONS_UPSTREAM_TIMEOUT is 60 s" in messages
    assert "GPTACTIONS_TEMPLATE_TIMEOUT is 50 s" in messages
    assert "250,000" in messages
    assert readiness.check_settings(Settings(privacy_contact="p@example.org")) == []
    late = readiness.check_settings(Settings(privacy_contact="p@x.org", request_deadline=50))
    assert [f.message.split(" is ")[0] for f in late] == ["GPTACTIONS_REQUEST_DEADLINE"]


async def test_the_check_does_not_use_up_the_keys_rate_limit(tmp_path: Path) -> None:
    """The console checks the document in the background, with the key it has: the calls the
    key's user makes must keep the whole of its rate limit."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'test.db'}", api_key=ADMIN_KEY)
    async with running_app(settings, FakeBackend()) as api:
        key = (await api.runtime.keys.create("console user", rate_limit="1/hour")).secret
        document = (await api.http.get("/openapi.json")).json()
        checks = [(await check(api, document, key)).status_code for _ in range(3)]
        calls = [(await api.get("/api/v1/gpt/status", key)).status_code for _ in range(2)]
        refused = await check(api, document, "gpta_not_a_key_of_this_server_0000000000000000")
    assert checks == [200, 200, 200]
    assert calls == [200, 429]
    assert refused.status_code == 401  # a wrong key is still said to be wrong
