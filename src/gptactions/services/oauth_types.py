"""The OAuth 2.0 authorization server's errors and values: what its endpoints take and give.

Errors carry RFC 6749's codes; the routes shape them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit

# RFC 7636, 4.1 and 4.2: a verifier is 43-128 unreserved characters; an S256 challenge is a
# SHA-256 digest in base64url, 43 characters, which a challenge of other characters never is.
PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


class BadClient(Exception):
    """An unknown client or unregistered redirect URI: shown on an error page, never redirected."""


class AuthorizeError(Exception):
    """An authorization request error that is sent back to the (valid) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class TokenError(Exception):
    """A token or revocation endpoint error (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class ClientInfo:
    """A client as listed: never its secret."""

    id: str
    name: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    public: bool
    created_at: datetime
    revoked_at: datetime | None


class RevokedClient(Exception):
    """A revoked client: it cannot be changed, only replaced by a new one."""


@dataclass(frozen=True)
class ClientUpdate:
    """A client changed; the scopes it lost, and how many token pairs holding them were revoked."""

    info: ClientInfo
    dropped_scopes: tuple[str, ...]
    revoked_tokens: int


@dataclass(frozen=True)
class NewClient:
    """A new client; `secret` is shown once and never stored (None for a public client)."""

    info: ClientInfo
    secret: str | None


@dataclass(frozen=True)
class AuthorizationRequest:
    """The parameters of `/oauth/authorize`, as given."""

    response_type: str | None = None
    client_id: str | None = None
    redirect_uri: str | None = None
    scope: str | None = None
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None


@dataclass(frozen=True)
class ValidAuthorization:
    """An authorization request that may be shown to the user."""

    client_id: str
    client_name: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_challenge: str | None


@dataclass(frozen=True)
class ClientCredentials:
    """How a client authenticated at the token endpoint."""

    client_id: str | None
    secret: str | None
    basic: bool = False


@dataclass(frozen=True)
class IssuedTokens:
    """A token response (RFC 6749 section 5.1)."""

    access_token: str
    refresh_token: str
    expires_in: int
    scopes: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        """The response body."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": " ".join(self.scopes),
        }


def with_query(uri: str, params: dict[str, str]) -> str:
    """The redirect URI with parameters added to its query (its own query kept)."""
    joiner = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return uri + joiner + urlencode(params)


def check_redirect_uri(uri: str) -> str:
    """A redirect URI a client may register: absolute https (http only to localhost)."""
    parts = urlsplit(uri)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ValueError(f"not a redirect URI: {uri!r} (an absolute https URL without #fragment)")
    if parts.scheme == "http" and not local:
        raise ValueError(f"a redirect URI must use https (http only to localhost): {uri!r}")
    return uri


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
