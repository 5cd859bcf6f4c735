"""Sign-in through an OpenID Connect provider: leaving our sign-in form, and coming back.

`GET /oauth/oidc/start` takes the parameters of our own `/oauth/authorize` (the sign-in page's
"Sign in with" button sends them), checks them, and sends the browser to the provider with a
cookie binding the sign-in to it; or `next=authorizations`, from the page of the user's
applications. `GET /oauth/oidc/callback` is where the provider sends it back; a good answer
continues to the consent page (or that page) as a local sign-in does. Every failure is an error
page: nothing here redirects anywhere but to the provider and to our own pages.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gptactions.api.deps import RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.forwarded import client_address
from gptactions.api.oauth import (
    authorize_params,
    consent_page,
    error_page,
    issuer,
    see_other,
    validated,
    validated_query,
)
from gptactions.api.oauth_authorizations import NEXT, authorizations_page
from gptactions.api.pages import page_base, serve_pages
from gptactions.services.oidc import SIGN_IN_LIFETIME, OidcError
from gptactions.services.users import TooManyAttempts

router = APIRouter(include_in_schema=False, route_class=DirectRoute)

CALLBACK_PATH = "/oauth/oidc/callback"
COOKIE = "gptactions_oidc_state"
COOKIE_PATH = "/oauth/oidc/"
_NOT_CONFIGURED = "signing in through a provider is not configured on this server"


@router.get("/oauth/oidc/start")
async def start(request: Request, runtime: RuntimeDep) -> Response:
    """Send the browser to the OpenID Connect provider to sign in."""
    serve_pages(request, runtime.settings)
    if runtime.oidc is None:
        return error_page(_NOT_CONFIGURED, 404)
    if request.query_params.get("next") == NEXT:
        params = {"next": NEXT}
    else:
        checked = await validated_query(request, runtime)
        if isinstance(checked, Response):
            return checked
        params = authorize_params(checked[1])
    base = issuer(request, runtime)
    address = client_address(request)
    try:
        started = await runtime.oidc.start(params, base + CALLBACK_PATH, address=address)
    except OidcError as error:
        return error_page(str(error), error.status)
    except TooManyAttempts as error:
        response = error_page(str(error), 429)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    response = see_other(started.url)
    response.set_cookie(
        COOKIE,
        started.state,
        max_age=int(SIGN_IN_LIFETIME.total_seconds()),
        path=page_base() + COOKIE_PATH,
        secure=base.startswith("https://"),
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
    )
    return response


@router.get(CALLBACK_PATH)
async def callback(request: Request, runtime: RuntimeDep) -> Response:
    """The provider's answer: on success, the consent page for the signed-in user."""
    serve_pages(request, runtime.settings)
    if runtime.oidc is None:
        return error_page(_NOT_CONFIGURED, 404)
    query = request.query_params
    try:
        returned = await runtime.oidc.finish(
            state=query.get("state"),
            browser_state=request.cookies.get(COOKIE),
            code=query.get("code"),
            error=query.get("error"),
            error_description=query.get("error_description"),
        )
    except OidcError as error:
        response = error_page(str(error), error.status)
    else:
        checked = (
            None  # from the page of the user's applications, not an authorization request
            if returned.request.get("next") == NEXT
            else await validated(runtime, returned.request, issuer(request, runtime))
        )
        if checked is None:
            response = await authorizations_page(runtime, returned.user)
        elif isinstance(checked, Response):
            response = checked
        else:
            response = await consent_page(runtime, checked, returned.user)
    response.delete_cookie(COOKIE, path=page_base() + COOKIE_PATH)
    return response
