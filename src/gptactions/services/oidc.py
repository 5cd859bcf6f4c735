"""Sign-in through an OpenID Connect provider (GPTACTIONS_OIDC_*), with Authlib.

This server is the provider's relying party: discovery from the issuer, an authorization
request with state, nonce and PKCE (S256), the code exchanged on the back channel, and the ID
token checked (signature by the provider's JWKS, iss, aud, exp, nonce) before the provider's
subject is mapped to a local user. Errors are `OidcError`s whose message is for the user.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from gptactions.config import Settings
from gptactions.services.keys import hash_key
from gptactions.services.users import InvalidUser, UserDisabled, UserInfo, UserService
from gptactions.store import accounts, queries
from gptactions.store.db import Database
from gptactions.store.models import OidcLogin, utcnow

SIGN_IN_LIFETIME = timedelta(minutes=10)
PROVIDER_TIMEOUT = 10.0  # seconds per request to the provider
LEEWAY = 60  # seconds of clock difference allowed with the provider
MAX_PROVIDER_TEXT = 200  # characters of a provider's error description shown to the user


class OidcError(Exception):
    """A sign-in through the provider that cannot go on; the message is for the user."""

    status = 400


class ProviderUnavailable(OidcError):
    """The provider could not be reached, or answered what is not OpenID Connect."""

    status = 502


class SignInRefused(OidcError):
    """The provider signed the user in, but this server does not let them in."""

    status = 403


@dataclass(frozen=True)
class OidcConfig:
    """The provider and this server's registration there."""

    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str
    allowed_domains: tuple[str, ...]
    username_claim: str
    name: str

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The configuration, or None when GPTACTIONS_OIDC_ISSUER is unset."""
        if not settings.oidc_issuer or not settings.oidc_client_id:
            return None
        secret = settings.oidc_client_secret
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            scopes=settings.oidc_scopes,
            allowed_domains=tuple(settings.oidc_allowed_domains),
            username_claim=settings.oidc_username_claim,
            name=settings.oidc_name or urlsplit(settings.oidc_issuer).hostname or "the provider",
        )


@dataclass(frozen=True)
class StartedSignIn:
    """Where to send the browser, and the state to bind to it (a cookie)."""

    url: str
    state: str


@dataclass(frozen=True)
class ReturnedSignIn:
    """A user back from the provider: our own authorization request's parameters, and who."""

    request: dict[str, str]
    user: UserInfo


def _text(value: str | None) -> str:
    return (value or "")[:MAX_PROVIDER_TEXT]


class OidcService:
    """Sends users to the provider and back, and maps the provider's subjects to users."""

    def __init__(self, config: OidcConfig, database: Database, users: UserService) -> None:
        self.config = config
        self._database = database
        self._users = users
        # httpx2: the client Authlib's httpx integration is built on (mcp and openai use it too).
        self._http: httpx2.AsyncClient | None = None
        self._wrap: Callable[[httpx2.AsyncBaseTransport], httpx2.AsyncBaseTransport] | None = None
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def send_through(
        self, wrap: Callable[[httpx2.AsyncBaseTransport], httpx2.AsyncBaseTransport]
    ) -> None:
        """Make every call to the provider through `wrap(transport)` (tracing wraps it in a
        client span). Before the first call: the client is made on first use."""
        self._wrap = wrap

    def _transport(self) -> httpx2.AsyncBaseTransport | None:
        return None if self._wrap is None else self._wrap(httpx2.AsyncHTTPTransport())

    async def close(self) -> None:
        """Close the connections to the provider."""
        if self._http is not None:
            await self._http.aclose()

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            if self._http is None:
                self._http = httpx2.AsyncClient(
                    timeout=PROVIDER_TIMEOUT, follow_redirects=False, transport=self._transport()
                )
            answer = await self._http.get(url, headers={"Accept": "application/json"})
            answer.raise_for_status()
            document = answer.json()
        except (httpx2.HTTPError, ValueError) as error:
            raise ProviderUnavailable(
                f"{self.config.name} could not be reached to sign you in; try again later"
            ) from error
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{self.config.name} answered something unexpected")
        return document

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched once and checked."""
        if self._metadata is None:
            issuer = self.config.issuer
            document = await self._get(f"{issuer}/.well-known/openid-configuration")
            # OpenID Connect Discovery 4.3: the issuer must be exactly the one configured.
            if document.get("issuer") != issuer:
                raise ProviderUnavailable(
                    f"{self.config.name}'s discovery document names another issuer"
                )
            needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if not all(isinstance(document.get(name), str) for name in needed):
                raise ProviderUnavailable(f"{self.config.name}'s discovery document is incomplete")
            self._metadata = document
        return self._metadata

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            self._jwks = await self._get((await self.metadata())["jwks_uri"])
        try:
            return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise ProviderUnavailable(f"{self.config.name}'s signing keys are unusable") from error

    def _client(self, metadata: dict[str, Any], callback: str) -> AsyncOAuth2Client:
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if self.config.client_secret is None:
            method = "none"
        elif "client_secret_basic" in methods:
            method = "client_secret_basic"
        else:
            method = "client_secret_post"
        return AsyncOAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            scope=self.config.scopes,
            redirect_uri=callback,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            timeout=PROVIDER_TIMEOUT,
            transport=self._transport(),
        )

    async def start(self, request: dict[str, str], callback: str, *, address: str) -> StartedSignIn:
        """Remember the sign-in and return the provider's authorization URL for it.

        Counted against the client address's sign-in attempts (TooManyAttempts past the limit),
        since each one stores a row until it expires.
        """
        await self._users.throttle(f"oidc:{address}")
        metadata = await self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        now = utcnow()
        async with self._database.session() as session:
            await accounts.add_oidc_login(
                session,
                OidcLogin(
                    state_hash=hash_key(state),
                    nonce=nonce,
                    code_verifier=verifier,
                    request=json.dumps({"params": request, "callback": callback}),
                    expires_at=now + SIGN_IN_LIFETIME,
                ),
                now,
            )
        async with self._client(metadata, callback) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return StartedSignIn(url, state)

    async def finish(
        self,
        *,
        state: str | None,
        browser_state: str | None,
        code: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> ReturnedSignIn:
        """Check the provider's answer and return the signed-in user; OidcError otherwise."""
        # RFC 6749 10.12: the answer must come back to the browser that started the sign-in.
        if (
            not state
            or not browser_state
            or not hmac.compare_digest(state.encode(), browser_state.encode())
        ):
            raise OidcError(
                "this sign-in did not start in this browser or has expired; "
                "start again from the application"
            )
        now = utcnow()
        async with self._database.session() as session:
            login = await accounts.use_oidc_login(session, hash_key(state), now)
        if login is None or queries.as_utc(login.expires_at) < now:
            raise OidcError("this sign-in has expired or was already used; start again")
        if error:
            detail = f": {_text(error_description)}" if error_description else ""
            raise SignInRefused(f"{self.config.name} did not sign you in ({_text(error)}){detail}")
        if not code:
            raise OidcError(f"{self.config.name} sent no authorization code")
        saved = json.loads(login.request)
        claims = await self._exchange(code, login, saved["callback"])
        user = await self._user(claims)
        return ReturnedSignIn(saved["params"], user)

    async def _exchange(self, code: str, login: OidcLogin, callback: str) -> dict[str, Any]:
        """The code exchanged for tokens on the back channel; the ID token's checked claims."""
        metadata = await self.metadata()
        try:
            async with self._client(metadata, callback) as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=login.code_verifier,
                )
        except OAuthError as failure:
            raise OidcError(
                f"{self.config.name} refused the sign-in ({_text(failure.error)})"
            ) from failure
        except (httpx2.HTTPError, ValueError) as failure:
            raise ProviderUnavailable(
                f"{self.config.name} could not be reached to finish the sign-in"
            ) from failure
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError(f"{self.config.name} sent no ID token (is it an OpenID Connect one?)")
        return await self._verified(id_token, login.nonce, token.get("access_token"))

    async def _verified(self, id_token: str, nonce: str, access_token: object) -> dict[str, Any]:
        metadata = await self.metadata()
        algorithms = [
            name
            for name in metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
            if isinstance(name, str) and name != "none"
        ]
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
            except InvalidKeyIdError:  # the provider rotated its keys since they were fetched
                decoded = jwt.decode(
                    id_token, await self._key_set(refresh=True), algorithms=algorithms
                )
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "value": self.config.issuer},
                    "aud": {"essential": True, "value": self.config.client_id},
                },
                {
                    "nonce": nonce,
                    "client_id": self.config.client_id,
                    "access_token": access_token if isinstance(access_token, str) else None,
                },
            )
            claims.validate(leeway=LEEWAY)
        except (JoseError, ValueError) as failure:
            reason = (
                getattr(failure, "description", None)
                or getattr(failure, "error", None)
                or type(failure).__name__
            )
            raise OidcError(
                f"the ID token from {self.config.name} is not valid ({_text(str(reason))})"
            ) from failure
        return dict(claims)

    async def _user(self, claims: dict[str, Any]) -> UserInfo:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 1 <= len(subject) <= 255:
            raise OidcError(f"the ID token from {self.config.name} has no usable subject")
        if self.config.allowed_domains:
            email = claims.get("email")
            if (
                not isinstance(email, str)
                or "@" not in email
                or claims.get("email_verified") is False
            ):
                raise SignInRefused(
                    f"{self.config.name} gave no verified email address, "
                    "and this server admits only some domains"
                )
            domain = email.rsplit("@", 1)[1].lower()
            if domain not in self.config.allowed_domains:
                raise SignInRefused(f"accounts of {_text(domain)} may not sign in here")
        wanted = claims.get(self.config.username_claim)
        try:
            return await self._users.sign_in_external(
                self.config.issuer, subject, wanted if isinstance(wanted, str) else None
            )
        except UserDisabled as refused:
            raise SignInRefused(str(refused)) from refused
        except InvalidUser as failure:
            raise OidcError(str(failure)) from failure
