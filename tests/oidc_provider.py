"""A small OpenID Connect provider for tests: discovery, JWKS, authorize, token, on a local port.

It checks what a real provider checks (the client's secret, the redirect URI, PKCE S256, single
use codes) and signs ID tokens with a test RSA key. `tamper` makes the next sign-in go wrong in
one way, as a broken or hostile provider would.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Tamper = Literal["nonce", "audience", "expired", "signature", "issuer", "state", "error"]
KEY_ID = "test-key-1"


@dataclass
class Identity:
    """The account the provider signs in next."""

    sub: str
    email: str | None = None
    email_verified: bool = True
    preferred_username: str | None = None


@dataclass
class LocalProvider:
    """The provider's state: its registered client, keys, codes, and what it was asked."""

    client_id: str
    client_secret: str
    redirect_uri: str
    url: str = ""
    identity: Identity = field(default_factory=lambda: Identity("subject-1", "alice@example.com"))
    tamper: Tamper | None = None
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    traceparents: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, the `traceparent` header sent, if any) of each request, in order."""
    _codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, {"kid": KEY_ID}, private=True)
    )
    # Same key id, another key: what a forged token would be signed with.
    forger: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, {"kid": KEY_ID}, private=True)
    )

    def app(self) -> Starlette:
        """The provider's HTTP endpoints."""
        return Starlette(
            middleware=[Middleware(_RecordTraceparents, provider=self)],
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ],
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    def _refuse(self, reason: str) -> Response:
        self.refusals.append(reason)
        return JSONResponse({"error": "invalid_request", "error_description": reason}, 400)

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        if params.get("client_id") != self.client_id:
            return self._refuse("unknown client_id")
        if params.get("redirect_uri") != self.redirect_uri:
            return self._refuse(f"unregistered redirect_uri {params.get('redirect_uri')}")
        if params.get("response_type") != "code" or "openid" not in params.get("scope", "").split():
            return self._refuse("not an OpenID Connect code request")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return self._refuse("PKCE S256 is required")
        state = params.get("state", "")
        if self.tamper == "error":
            answer = {
                "error": "access_denied",
                "error_description": "The user said no",
                "state": state,
            }
            return RedirectResponse(f"{self.redirect_uri}?{urlencode(answer)}", 302)
        code = secrets.token_urlsafe(24)
        self._codes[code] = {
            "challenge": params["code_challenge"],
            "nonce": params.get("nonce"),
            "identity": self.identity,
        }
        if self.tamper == "state":
            state = secrets.token_urlsafe(32)
        return RedirectResponse(
            f"{self.redirect_uri}?{urlencode({'code': code, 'state': state})}", 302
        )

    async def _token(self, request: Request) -> Response:
        form = {name: str(value) for name, value in (await request.form()).items()}
        self.token_requests.append(form)
        basic = request.headers.get("authorization", "").removeprefix("Basic ")
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if basic != expected:
            return self._refuse("wrong client credentials")
        if form.get("grant_type") != "authorization_code":
            return self._refuse("grant_type must be authorization_code")
        if form.get("redirect_uri") != self.redirect_uri:
            return self._refuse("redirect_uri differs")
        issued = self._codes.pop(form.get("code", ""), None)
        if issued is None:
            return self._refuse("unknown or used code")
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != issued["challenge"]:
            return self._refuse("code_verifier does not match")
        identity: Identity = issued["identity"]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": identity.sub,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": issued["nonce"],
        }
        if identity.email is not None:
            claims |= {"email": identity.email, "email_verified": identity.email_verified}
        if identity.preferred_username is not None:
            claims["preferred_username"] = identity.preferred_username
        key = self.key
        if self.tamper == "nonce":
            claims["nonce"] = "a-nonce-of-another-sign-in"
        elif self.tamper == "audience":
            claims["aud"] = "another-client"
        elif self.tamper == "expired":
            claims |= {"iat": now - 3600, "exp": now - 1800}
        elif self.tamper == "issuer":
            claims["iss"] = "https://impostor.example"
        elif self.tamper == "signature":
            key = self.forger
        id_token = jwt.encode({"alg": "RS256", "kid": KEY_ID}, claims, key)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
                "scope": "openid email profile",
            },
            headers={"Cache-Control": "no-store"},
        )


@contextmanager
def serve_provider(provider: LocalProvider) -> Iterator[LocalProvider]:
    """Serve the provider on 127.0.0.1 from a thread; the socket listens before the block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    provider.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(provider.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class _RecordTraceparents:
    """Notes each request's path and `traceparent` header in `provider.traceparents`."""

    def __init__(self, app: ASGIApp, provider: LocalProvider) -> None:
        self.app = app
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            sent = headers.get(b"traceparent")
            self.provider.traceparents.append((scope["path"], sent.decode() if sent else None))
        await self.app(scope, receive, send)
