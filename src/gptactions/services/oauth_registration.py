"""RFC 7591 dynamic registration: a public client registers itself from its metadata.

Off unless `GPTACTIONS_OAUTH_DYNAMIC_REGISTRATION` is true (`api.oauth`); what a registration
may ask for is checked here, and the client is made by `OAuthService.create_client`.
"""

from __future__ import annotations

from typing import Any

from gptactions.services.errors import string_problems
from gptactions.services.oauth import DEFAULT_CLIENT_SCOPES, OAuthService
from gptactions.services.oauth_types import ClientInfo, check_redirect_uri
from gptactions.store.models import utcnow


class RegistrationError(Exception):
    """A dynamic registration refused (RFC 7591, 3.2.2): its error code and description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


async def register_client(
    oauth: OAuthService, metadata: object
) -> tuple[ClientInfo, dict[str, Any]]:
    """RFC 7591 dynamic registration of a public client from its `metadata` (the JSON a
    client sent); the client and the registration's answer. RegistrationError otherwise.

    Only what this server can honour is accepted: public clients (`none`, with PKCE), the
    code and refresh grants, https redirect URIs (http only to localhost), known scopes.
    The name the client gives itself is marked "(self-registered)": the consent page shows
    it, and nobody vouched for it."""
    if not isinstance(metadata, dict):
        raise RegistrationError("invalid_client_metadata", "send the metadata as a JSON object")
    if string_problems(metadata, lambda text: "\x00" in text, "holds U+0000"):
        raise RegistrationError(
            "invalid_client_metadata", "no value may hold the character U+0000 (NUL)"
        )
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise RegistrationError("invalid_redirect_uri", "redirect_uris: a list of URLs")
    for uri in uris:
        try:
            check_redirect_uri(uri)
        except ValueError as error:
            raise RegistrationError("invalid_redirect_uri", str(error)) from None
    method = metadata.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise RegistrationError(
            "invalid_client_metadata",
            "token_endpoint_auth_method: only 'none' (a public client, with PKCE) registers",
        )
    grants = metadata.get("grant_types", ["authorization_code"])
    known = {"authorization_code", "refresh_token"}
    if not isinstance(grants, list) or not {str(grant) for grant in grants} <= known:
        raise RegistrationError(
            "invalid_client_metadata", "grant_types: authorization_code and refresh_token"
        )
    if metadata.get("response_types", ["code"]) != ["code"]:
        raise RegistrationError("invalid_client_metadata", "response_types: only code")
    scope = metadata.get("scope", " ".join(DEFAULT_CLIENT_SCOPES))
    if not isinstance(scope, str) or not scope.split():
        raise RegistrationError("invalid_client_metadata", "scope: space-separated scopes")
    name = metadata.get("client_name") or ""
    if not isinstance(name, str) or len(name) > 100:
        raise RegistrationError("invalid_client_metadata", "client_name: up to 100 characters")
    try:
        new = await oauth.create_client(
            f"{name.strip() or 'an unnamed client'} (self-registered)",
            tuple(uris),
            scopes=tuple(scope.split()),
            public=True,
        )
    except ValueError as error:
        raise RegistrationError("invalid_client_metadata", str(error)) from None
    info = new.info
    answer = {
        "client_id": info.id,
        "client_id_issued_at": int(utcnow().timestamp()),
        "client_name": info.name,
        "redirect_uris": list(info.redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": " ".join(info.scopes),
    }
    return info, answer
