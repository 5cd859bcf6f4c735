"""`/oauth/authorizations`: the page where a user sees the applications they allowed, and
revokes them, as the consent page promises they can.

The user signs in as on the authorization's sign-in page: a password here, or the OpenID
Connect provider (`/oauth/oidc/start?next=authorizations`, whose callback comes back to
`authorizations_page`). Each Revoke button carries a one-time ticket bound to the user and that
application (`services.oauth_grants`); the page answering it carries fresh ones. No cookie.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gptactions.api.deps import RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.oauth import BadParameter, error_page, read_form, signed_in, typed_username
from gptactions.api.pages import page, page_base, serve_pages
from gptactions.runtime import Runtime
from gptactions.services.oauth import SCOPE_DESCRIPTIONS
from gptactions.services.oauth_grants import Authorizations, list_grants, revoke_grant
from gptactions.services.users import UserInfo

router = APIRouter(include_in_schema=False, route_class=DirectRoute)

PATH = "/oauth/authorizations"
NEXT = "authorizations"
"""The `next` of a sign-in through the provider that comes back to this page."""


def _sign_in(
    runtime: Runtime, *, error: str | None = None, username: str = "", status: int = 200
) -> Response:
    return page(
        "authorizations_login.html",
        status,
        action=page_base() + PATH,
        params={},
        provider_params={"next": NEXT},
        error=error,
        username=username,
        provider=runtime.oidc.config.name if runtime.oidc else None,
    )


def _expired() -> Response:
    return error_page(
        "this page has expired, or its button was already used; sign in again", retry=PATH
    )


def _listing(listed: Authorizations | None) -> Response:
    if listed is None:  # the user was deleted meanwhile
        return _expired()
    grants = [
        {
            "client_name": grant.client_name,
            "granted_at": grant.granted_at,
            "scopes": [(scope, SCOPE_DESCRIPTIONS[scope]) for scope in grant.scopes],
            "ticket": grant.ticket,
        }
        for grant in listed.grants
    ]
    return page(
        "authorizations.html", username=listed.username, grants=grants, revoked=listed.revoked
    )


async def authorizations_page(runtime: Runtime, user: UserInfo) -> Response:
    """The applications a signed-in user allowed, each with its Revoke button."""
    return _listing(await list_grants(runtime.database, user.id))


@router.get(PATH)
async def authorizations(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in form of the page of the applications the user allowed."""
    serve_pages(request, runtime.settings)
    return _sign_in(runtime)


@router.post(PATH)
async def authorizations_form(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in form's answer (the list), and the Revoke buttons' (the list without it)."""
    serve_pages(request, runtime.settings)
    try:
        form = await read_form(request)
    except BadParameter as error:
        return error_page(str(error), retry=PATH)
    if form.get("step") == "revoke":
        ticket = form.get("ticket")
        return _listing(await revoke_grant(runtime.database, ticket)) if ticket else _expired()
    signed = await signed_in(
        request,
        runtime,
        form,
        lambda error, status: _sign_in(
            runtime, error=error, username=typed_username(form), status=status
        ),
    )
    if isinstance(signed, Response):
        return signed
    return await authorizations_page(runtime, signed)
