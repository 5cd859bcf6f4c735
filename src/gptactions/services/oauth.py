"""The OAuth 2.0 authorization server: clients, the authorization code grant, tokens.

Codes, consent tickets, tokens and client secrets carry 256 random bits and are stored only as
SHA-256 hashes, like API keys. Errors and values are in `oauth_types`; the routes shape them.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from gptactions.services.keys import USERS_TENANT, Principal, hash_key
from gptactions.services.oauth_types import (
    PKCE_VERIFIER,
    S256_CHALLENGE,
    AuthorizationRequest,
    AuthorizeError,
    BadClient,
    ClientCredentials,
    ClientInfo,
    ClientUpdate,
    IssuedTokens,
    NewClient,
    RevokedClient,
    TokenError,
    ValidAuthorization,
    check_redirect_uri,
    pkce_challenge,
    with_query,
)
from gptactions.store import accounts, queries
from gptactions.store.db import Database
from gptactions.store.models import OAuthClient, OAuthCode, OAuthToken, utcnow

log = logging.getLogger(__name__)

OAUTH_SCOPES = ("chat", "actions", "logs")
DEFAULT_CLIENT_SCOPES = ("chat", "actions")
ACCESS_PREFIX = "gpto_"
REFRESH_PREFIX = "gptr_"
CLIENT_SECRET_PREFIX = "gptcs_"  # noqa: S105 (a marker, not a secret)
CODE_LIFETIME = timedelta(seconds=60)
CONSENT_LIFETIME = timedelta(minutes=10)
SCOPE_DESCRIPTIONS = {
    "chat": "Talk with the assistant and continue your conversations",
    "actions": "Run the server's actions on your behalf",
    "logs": "Read the log of your own conversations and action calls",
}


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def requested_scopes(text: str) -> tuple[str, ...]:
    """The scopes a client asks for: space separated (RFC 6749, 3.3), and commas accepted, as
    in the document's `?scopes=`: `chat,actions` is what a builder types in ChatGPT's Scope
    field as often as `chat actions`."""
    return _scopes(text.replace(",", " "))


def _client_info(client: OAuthClient) -> ClientInfo:
    return ClientInfo(
        id=client.id,
        name=client.name,
        redirect_uris=tuple(client.redirect_uris.splitlines()),
        scopes=_scopes(client.scopes),
        public=client.secret_hash is None,
        created_at=queries.as_utc(client.created_at),
        revoked_at=queries.as_utc(client.revoked_at) if client.revoked_at else None,
    )


def _ordered(scopes: set[str] | frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(scopes, key=OAUTH_SCOPES.index))


def _check_client_scopes(scopes: tuple[str, ...]) -> None:
    unknown = sorted(set(scopes) - set(OAUTH_SCOPES))
    if unknown or not scopes:
        choices = ", ".join(OAUTH_SCOPES)
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; use {choices}")


def _mismatch(
    record: OAuthCode, client_id: str, redirect_uri: str, code_verifier: str | None
) -> TokenError | None:
    """Why a code does not belong to this redemption (RFC 6749, 4.1.3; RFC 7636, 4.6); None
    when it does."""
    if record.client_id != client_id:
        return TokenError("invalid_grant", "the code was issued to another client")
    if record.redirect_uri != redirect_uri:
        return TokenError("invalid_grant", "redirect_uri differs from the authorization's")
    if record.code_challenge is not None:
        if not code_verifier:
            return TokenError("invalid_grant", "code_verifier is required (PKCE)")
        if not hmac.compare_digest(pkce_challenge(code_verifier), record.code_challenge):
            return TokenError("invalid_grant", "code_verifier does not match code_challenge")
    elif code_verifier:
        return TokenError("invalid_grant", "no code_challenge was sent for this code")
    return None


class OAuthService:
    """Registers clients, runs the authorization code grant, and checks access tokens."""

    def __init__(
        self,
        database: Database,
        *,
        access_lifetime: timedelta = timedelta(hours=1),
        refresh_lifetime: timedelta = timedelta(days=30),
    ) -> None:
        self._database = database
        self._access_lifetime = access_lifetime
        self._refresh_lifetime = refresh_lifetime

    # --- clients ------------------------------------------------------------------------------

    async def create_client(
        self,
        name: str,
        redirect_uris: tuple[str, ...],
        *,
        scopes: tuple[str, ...] = DEFAULT_CLIENT_SCOPES,
        public: bool = False,
    ) -> NewClient:
        """Register a client; its secret is returned once."""
        if not name.strip():
            raise ValueError("a client needs a name")
        if not redirect_uris:
            raise ValueError("a client needs at least one redirect URI")
        for uri in redirect_uris:
            check_redirect_uri(uri)
        _check_client_scopes(scopes)
        secret = None if public else CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
        client = OAuthClient(
            id=uuid.uuid4().hex,
            name=name.strip(),
            secret_hash=hash_key(secret) if secret else None,
            redirect_uris="\n".join(dict.fromkeys(redirect_uris)),
            scopes=" ".join(_ordered(set(scopes))),
        )
        async with self._database.session() as session:
            await accounts.add_client(session, client)
        return NewClient(_client_info(client), secret)

    async def list_clients(self) -> list[ClientInfo]:
        """Every client, without secrets."""
        async with self._database.session() as session:
            return [_client_info(c) for c in await accounts.list_clients(session)]

    async def update_client(
        self,
        client_id: str,
        *,
        name: str | None = None,
        redirect_uris: tuple[str, ...] | None = None,
        add_redirect_uris: tuple[str, ...] = (),
        scopes: tuple[str, ...] | None = None,
    ) -> ClientUpdate | None:
        """Change what is given of a client's name, redirect URIs (replaced, or added to) and
        scopes, with create_client's checks; None when there is no such client.

        Its tokens that hold a scope it no longer has are revoked, and so are its codes and
        consent tickets not used yet that hold one or name a redirect URI no longer registered;
        the rest of its tokens go on working. Raises RevokedClient for a revoked client.
        """
        if name is not None and not name.strip():
            raise ValueError("a client needs a name")
        if redirect_uris is not None and not redirect_uris:
            raise ValueError("a client needs at least one redirect URI")
        for uri in (*(redirect_uris or ()), *add_redirect_uris):
            check_redirect_uri(uri)
        if scopes is not None:
            _check_client_scopes(scopes)
        async with self._database.session() as session:
            client = await accounts.client_by_id(session, client_id)
            if client is None:
                return None
            if client.revoked_at is not None:
                raise RevokedClient(
                    f"the client {client.id} ({client.name}) was revoked on "
                    f"{queries.as_utc(client.revoked_at):%Y-%m-%d %H:%M} UTC and cannot be "
                    "updated: create a new one"
                )
            kept = redirect_uris if redirect_uris is not None else client.redirect_uris.splitlines()
            uris = tuple(dict.fromkeys((*kept, *add_redirect_uris)))
            had = set(_scopes(client.scopes))
            dropped = _ordered(had - set(scopes)) if scopes is not None else ()
            if name is not None:
                client.name = name.strip()
            client.redirect_uris = "\n".join(uris)
            if scopes is not None:
                client.scopes = " ".join(_ordered(set(scopes)))
            revoked = await accounts.revoke_client_scopes(session, client.id, dropped, utcnow())
            await accounts.discard_client_codes(session, client.id, uris, dropped)
            info = _client_info(client)
        if revoked:
            log.info(
                "the client %r lost the scope(s) %s: its %d token pair(s) holding them are revoked",
                info.name,
                " ".join(dropped),
                revoked,
            )
        return ClientUpdate(info, dropped, revoked)

    async def revoke_client(self, client_id: str) -> ClientInfo | None:
        """Revoke a client and every token issued to it."""
        async with self._database.session() as session:
            client = await accounts.client_by_id(session, client_id)
            if client is None:
                return None
            await accounts.revoke_client(session, client)
            return _client_info(client)

    # --- the authorization endpoint -----------------------------------------------------------

    async def validate(self, request: AuthorizationRequest) -> ValidAuthorization:
        """Check an authorization request.

        A bad client or redirect URI raises BadClient (the user sees an error page); anything
        else wrong raises AuthorizeError, which the route sends back to the redirect URI.
        """
        if not request.client_id:
            raise BadClient("the request has no client_id")
        async with self._database.session() as session:
            client = await accounts.client_by_id(session, request.client_id)
        if client is None or client.revoked_at is not None:
            raise BadClient("the application asking for access is not registered here")
        if not request.redirect_uri:
            raise BadClient("the request has no redirect_uri")
        if request.redirect_uri not in client.redirect_uris.splitlines():
            raise BadClient(
                "the redirect_uri is not one registered for this application, so this server "
                "will not send you there"
            )
        if request.response_type != "code":
            raise AuthorizeError(
                "unsupported_response_type", "only response_type=code is supported"
            )
        if not request.state:
            raise AuthorizeError("invalid_request", "the state parameter is required")
        allowed = set(_scopes(client.scopes))
        wanted = set(requested_scopes(request.scope)) if request.scope else allowed
        unknown = wanted - set(OAUTH_SCOPES)
        if unknown:
            raise AuthorizeError("invalid_scope", f"unknown scope(s): {' '.join(sorted(unknown))}")
        if not wanted <= allowed or not wanted:
            raise AuthorizeError(
                "invalid_scope",
                f"this application may ask only for: {' '.join(_ordered(allowed))}",
            )
        if request.code_challenge is not None or request.code_challenge_method is not None:
            if (request.code_challenge_method or "plain") != "S256":
                raise AuthorizeError("invalid_request", "code_challenge_method must be S256")
            if not S256_CHALLENGE.fullmatch(request.code_challenge or ""):
                raise AuthorizeError(
                    "invalid_request", "code_challenge must be 43 base64url characters (S256)"
                )
        elif client.secret_hash is None:
            raise AuthorizeError("invalid_request", "PKCE (code_challenge, S256) is required")
        return ValidAuthorization(
            client_id=client.id,
            client_name=client.name,
            redirect_uri=request.redirect_uri,
            scopes=_ordered(wanted),
            state=request.state,
            code_challenge=request.code_challenge,
        )

    async def open_consent(self, authorization: ValidAuthorization, user_id: str) -> str:
        """A one-time ticket for the consent form of a signed-in user."""
        ticket = secrets.token_urlsafe(32)
        await self._store_code(ticket, "consent", authorization, user_id, CONSENT_LIFETIME)
        return ticket

    async def decide(self, ticket: str, *, allow: bool) -> str:
        """Answer the consent form: the URL to send the browser to, with a code or an error."""
        now = utcnow()
        async with self._database.session() as session:
            record = await accounts.use_code(session, hash_key(ticket), "consent", now)
        if record is None or queries.as_utc(record.expires_at) < now:
            raise BadClient("this sign-in has expired or was already answered; start again")
        state = {"state": record.state} if record.state else {}
        if not allow:
            return with_query(
                record.redirect_uri,
                {"error": "access_denied", "error_description": "the user denied access", **state},
            )
        code = secrets.token_urlsafe(32)
        authorization = ValidAuthorization(
            client_id=record.client_id,
            client_name="",
            redirect_uri=record.redirect_uri,
            scopes=_scopes(record.scopes),
            state=record.state or "",
            code_challenge=record.code_challenge,
        )
        await self._store_code(code, "code", authorization, record.user_id, CODE_LIFETIME)
        return with_query(record.redirect_uri, {"code": code, **state})

    async def _store_code(
        self,
        secret: str,
        stage: str,
        authorization: ValidAuthorization,
        user_id: str,
        lifetime: timedelta,
    ) -> None:
        now = utcnow()
        async with self._database.session() as session:
            await accounts.delete_expired_codes(session, now)
            await accounts.add_code(
                session,
                OAuthCode(
                    code_hash=hash_key(secret),
                    stage=stage,
                    client_id=authorization.client_id,
                    user_id=user_id,
                    redirect_uri=authorization.redirect_uri,
                    scopes=" ".join(authorization.scopes),
                    state=authorization.state or None,
                    code_challenge=authorization.code_challenge,
                    expires_at=now + lifetime,
                ),
            )

    # --- the token endpoint -------------------------------------------------------------------

    async def _client(self, credentials: ClientCredentials) -> OAuthClient:
        """The authenticated client; invalid_client (401) otherwise."""
        challenge = 401
        if not credentials.client_id:
            raise TokenError("invalid_client", "client authentication is required", challenge)
        async with self._database.session() as session:
            client = await accounts.client_by_id(session, credentials.client_id)
        if client is None or client.revoked_at is not None:
            raise TokenError("invalid_client", "unknown client", challenge)
        if client.secret_hash is None:
            if credentials.secret:
                raise TokenError("invalid_client", "a public client has no secret", challenge)
            return client
        if not credentials.secret:
            raise TokenError(
                "invalid_client", "this client must authenticate with its client_secret", challenge
            )
        if not hmac.compare_digest(hash_key(credentials.secret), client.secret_hash):
            raise TokenError("invalid_client", "wrong client secret", challenge)
        return client

    async def exchange_code(
        self,
        credentials: ClientCredentials,
        *,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
    ) -> IssuedTokens:
        """The authorization_code grant.

        A code is used once: the first redemption that matches it (its client, redirect URI and
        PKCE verifier, RFC 6749 4.1.3) marks it used, whatever comes of it. Presented again so,
        it is refused and every token pair issued from it is revoked (RFC 6749, 4.1.2): someone
        else holds the code, and may have been the first to redeem it. The pair is issued in
        the transaction that marks the code used, so a redemption racing with it waits for that
        commit, and then finds the pair to revoke.

        A redemption that does not match is refused and changes nothing: the code stays its
        client's, and so do the tokens issued from it. Burning the code instead would let
        anyone who saw it (in a log, a browser's history, a proxy) make the user's sign-in fail,
        or end their session, with nothing gained: the checks cannot be guessed past within the
        code's 60 seconds (a verifier holds 256 bits; a confidential client's secret too).
        """
        client = await self._client(credentials)
        if not code:
            raise TokenError("invalid_request", "the code parameter is required")
        if not redirect_uri:
            raise TokenError("invalid_request", "the redirect_uri parameter is required")
        if code_verifier and not PKCE_VERIFIER.fullmatch(code_verifier):
            raise TokenError(
                "invalid_request", "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~"
            )
        now = utcnow()
        digest = hash_key(code)
        challenge = pkce_challenge(code_verifier) if code_verifier else None
        binding = accounts.CodeBinding(client.id, redirect_uri, challenge)
        revoked = 0
        outcome: IssuedTokens | TokenError
        async with self._database.session() as session:
            record = await accounts.use_code(session, digest, "code", now, binding)
            known = None if record else await accounts.code_by_hash(session, digest)
            if known is not None and known.stage != "code":
                known = None
            if record is not None:
                user = await accounts.user_by_id(session, record.user_id)
                if queries.as_utc(record.expires_at) < now:
                    outcome = TokenError("invalid_grant", "the code has expired")
                elif user is None or user.disabled_at is not None:
                    outcome = TokenError("invalid_grant", "the user is disabled")
                else:
                    scopes = _scopes(record.scopes)
                    outcome = await self._issue(session, client.id, user.id, scopes, now, digest)
            elif known and (mismatch := _mismatch(known, client.id, redirect_uri, code_verifier)):
                outcome = mismatch
            else:  # used before by its client, or forgotten since (unknown: nothing to revoke)
                revoked = await accounts.revoke_code_tokens(
                    session, digest, now, client_id=client.id
                )
                outcome = TokenError("invalid_grant", "the code is not valid or was already used")
        if known is not None and known.client_id != client.id:
            log.warning(
                "an authorization code of another client was presented by the client %r: "
                "refused, the code left to its own client",
                client.name,
            )
        if revoked:
            log.warning(
                "an authorization code of the client %r was used again: the %d token pair(s) "
                "issued from it are revoked",
                client.name,
                revoked,
            )
        if isinstance(outcome, TokenError):  # raised once the code's use is committed
            raise outcome
        return outcome

    async def refresh(
        self, credentials: ClientCredentials, *, refresh_token: str | None, scope: str | None
    ) -> IssuedTokens:
        """The refresh_token grant: the old pair is revoked and a new pair issued (rotation).

        A public client's refresh token presented again once rotated (or revoked) is taken for
        a stolen one (RFC 9700, 4.14.2): the server cannot tell the thief from the user, so every
        live token of that user for that client is revoked, and both must sign in again. A
        confidential client (a GPT) authenticates with its secret, so a stolen refresh token
        alone is useless there, and a retry after a lost answer only fails.
        """
        client = await self._client(credentials)
        if not refresh_token:
            raise TokenError("invalid_request", "the refresh_token parameter is required")
        now = utcnow()
        async with self._database.session() as session:
            token = await accounts.token_by_refresh_hash(session, hash_key(refresh_token))
            if token is None or token.client_id != client.id:
                raise TokenError("invalid_grant", "the refresh token is not valid")
            replayed = token.revoked_at is not None
            if replayed and client.secret_hash is not None:
                raise TokenError("invalid_grant", "the refresh token is not valid")
            if replayed:  # revoked with the session's commit, then refused below
                await accounts.revoke_user_tokens(session, token.user_id, client_id=client.id)
            else:
                wanted = await self._refreshable(session, token, scope, now)
                issued = await self._issue(
                    session, client.id, token.user_id, _ordered(wanted), now, token.code_hash
                )
        if replayed:
            log.warning(
                "a refresh token of the public client %r was used again after its rotation: "
                "every token of that user for this client is revoked",
                client.name,
            )
            raise TokenError("invalid_grant", "the refresh token is not valid")
        return issued

    @staticmethod
    async def _refreshable(
        session: AsyncSession, token: OAuthToken, scope: str | None, now: datetime
    ) -> set[str]:
        """Retire the live pair `token` for a new one; the scopes the new pair gets."""
        if queries.as_utc(token.refresh_expires_at) < now:
            raise TokenError("invalid_grant", "the refresh token has expired")
        user = await accounts.user_by_id(session, token.user_id)
        if user is None or user.disabled_at is not None:
            raise TokenError("invalid_grant", "the user is disabled")
        granted = set(_scopes(token.scopes))
        wanted = set(requested_scopes(scope)) if scope else granted
        if not wanted or not wanted <= granted:
            raise TokenError("invalid_scope", "a refresh may only narrow the scopes")
        if not await accounts.retire_token(session, token.id, now):
            raise TokenError("invalid_grant", "the refresh token is not valid")
        return wanted

    async def _issue(
        self,
        session: AsyncSession,
        client_id: str,
        user_id: str,
        scopes: tuple[str, ...],
        now: datetime,
        code_hash: str | None,
    ) -> IssuedTokens:
        """A new token pair, stored in `session`; `code_hash`: the code it descends from."""
        access = ACCESS_PREFIX + secrets.token_urlsafe(32)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await accounts.add_token(
            session,
            OAuthToken(
                id=uuid.uuid4().hex,
                access_hash=hash_key(access),
                refresh_hash=hash_key(refresh),
                client_id=client_id,
                user_id=user_id,
                scopes=" ".join(scopes),
                created_at=now,
                access_expires_at=now + self._access_lifetime,
                refresh_expires_at=now + self._refresh_lifetime,
                code_hash=code_hash,
            ),
        )
        return IssuedTokens(access, refresh, int(self._access_lifetime.total_seconds()), scopes)

    async def revoke(
        self, credentials: ClientCredentials, *, token: str | None, hint: str | None
    ) -> None:
        """RFC 7009: revoke the pair of an access or refresh token of this client.

        An unknown token is not an error: the answer is the same, so nothing is revealed. A
        token issued to another client is refused with `unauthorized_client` and left alone
        (RFC 7009, 2.1: the server verifies the token was issued to the requesting client and
        refuses the request otherwise; 2.2.1 takes RFC 6749 5.2's codes, of which this is the
        one RFC 7009's editor named for it). Answering 200 instead would tell the client its
        request was carried out when it was not; and the refusal reveals nothing new, since
        only a registered client holding the token's 256 random bits can ask.
        """
        client = await self._client(credentials)
        if not token:
            raise TokenError("invalid_request", "the token parameter is required")
        digest = hash_key(token)
        async with self._database.session() as session:
            lookups = [accounts.token_by_access_hash, accounts.token_by_refresh_hash]
            if hint == "refresh_token":
                lookups.reverse()
            for lookup in lookups:
                found = await lookup(session, digest)
                if found is not None:
                    if found.client_id != client.id:
                        raise TokenError(
                            "unauthorized_client", "the token was not issued to this client"
                        )
                    await accounts.retire_token(session, found.id, utcnow())
                    return

    # --- resource access ----------------------------------------------------------------------

    async def authenticate(self, access_token: str) -> Principal | None:
        """The principal acting for the token's user, or None when the token is not valid now."""
        now = utcnow()
        async with self._database.session() as session:
            token = await accounts.token_by_access_hash(session, hash_key(access_token))
            if (
                token is None
                or token.revoked_at is not None
                or queries.as_utc(token.access_expires_at) <= now
            ):
                return None
            user = await accounts.user_by_id(session, token.user_id)
            client = await accounts.client_by_id(session, token.client_id)
        if user is None or user.disabled_at is not None:
            return None
        if client is None or client.revoked_at is not None:
            return None
        return Principal(
            key_id=client.id,
            name=f"oauth:{client.name}",
            tenant=USERS_TENANT,
            scopes=frozenset(_scopes(token.scopes)),
            user_id=user.username,
        )
