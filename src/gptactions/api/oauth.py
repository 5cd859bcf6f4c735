"""The OAuth 2.0 authorization server's endpoints: metadata, authorize, token, revoke, and
(when allowed) dynamic registration.

These answer in RFC 6749's shapes (`{"error": "invalid_grant", ...}` and redirects), which OAuth
clients such as ChatGPT read, rather than the API's error shape. `api/errors.py` makes both: the
token and revocation endpoints' every error, a wrong method's and a body too large's too, is
RFC 6749's there.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from gptactions.api.deps import RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.api.errors import NO_STORE, error_response, oauth_error_response
from gptactions.api.forwarded import client_address, public_origin
from gptactions.api.pages import page, page_base, serve_pages
from gptactions.runtime import Runtime
from gptactions.services.oauth import OAUTH_SCOPES, SCOPE_DESCRIPTIONS
from gptactions.services.oauth_registration import RegistrationError, register_client
from gptactions.services.oauth_types import (
    AuthorizationRequest,
    AuthorizeError,
    BadClient,
    ClientCredentials,
    TokenError,
    ValidAuthorization,
    with_query,
)
from gptactions.services.users import TooManyAttempts, UserInfo

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, route_class=DirectRoute)

_AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


class BadParameter(Exception):
    """A parameter sent twice, which RFC 6749 forbids, or holding U+0000, which no identifier,
    code or token of ours has (and PostgreSQL cannot even compare)."""


def issuer(request: Request, runtime: Runtime) -> str:
    """This server's URL as OAuth clients see it: GPTACTIONS_PUBLIC_URL, else the request's."""
    return public_origin(request, runtime.settings)


@router.get("/.well-known/oauth-authorization-server")
async def metadata(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """RFC 8414 authorization server metadata."""
    base = issuer(request, runtime)
    methods = ["client_secret_basic", "client_secret_post", "none"]
    return JSONResponse(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "scopes_supported": list(OAUTH_SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "service_documentation": f"{base}/docs",
        }
        | (
            {"registration_endpoint": f"{base}/oauth/register"}
            if runtime.settings.oauth_dynamic_registration
            else {}
        )
    )


PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"
"""RFC 9728's metadata of a protected resource: where clients learn who issues its tokens."""


def resource_metadata_url(base: str, resource_path: str = "") -> str:
    """The metadata URL of the resource at `base + resource_path` (RFC 9728, 3.1: the
    well-known path goes between the host and the resource's own path)."""
    return f"{base}{PROTECTED_RESOURCE}{resource_path}"


def _resource_metadata(base: str, resource: str) -> JSONResponse:
    return JSONResponse(
        {
            "resource": resource,
            "authorization_servers": [base],
            "scopes_supported": list(OAUTH_SCOPES),
            "bearer_methods_supported": ["header"],
            "resource_name": "gptactions",
            "resource_documentation": f"{base}/docs",
        }
    )


@router.get(PROTECTED_RESOURCE)
async def api_resource_metadata(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """RFC 9728 metadata of the API as a whole: its tokens come from this server."""
    base = issuer(request, runtime)
    return _resource_metadata(base, base)


@router.get(PROTECTED_RESOURCE + "/mcp")
async def mcp_resource_metadata(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """RFC 9728 metadata of the MCP endpoint, which MCP clients find from its 401's
    `WWW-Authenticate` (the MCP authorization spec) before they sign in with OAuth."""
    base = issuer(request, runtime)
    return _resource_metadata(base, f"{base}/mcp")


def _params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise BadParameter(f"the parameter {name} was sent more than once")
        if "\x00" in name or "\x00" in value:
            raise BadParameter(f"the parameter {name!r} holds the character U+0000 (NUL)")
        params[name] = value
    return params


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body; an empty dict for another media type."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return _params(parse_qsl(body, keep_blank_values=True))


def authorize_params(params: dict[str, str]) -> dict[str, str]:
    """The authorization request's own parameters, without the forms' fields."""
    return {name: params[name] for name in _AUTHORIZE_PARAMS if params.get(name)}


def _authorization(params: dict[str, str]) -> AuthorizationRequest:
    return AuthorizationRequest(**{name: params.get(name) or None for name in _AUTHORIZE_PARAMS})


def error_page(message: str, status: int = 400, *, retry: str | None = None) -> Response:
    """The page shown instead of any redirect when the sign-in cannot go on; `retry`: a page of
    ours to start again from (else the user is sent back to the application)."""
    return page("error.html", status, message=message, retry=retry)


def see_other(uri: str) -> RedirectResponse:
    """A 303 redirect that is never cached."""
    # 303: the browser follows with a GET, also after the consent form's POST.
    return RedirectResponse(uri, 303, headers=NO_STORE)


def _login(
    runtime: Runtime,
    authorization: ValidAuthorization,
    params: dict[str, str],
    *,
    error: str | None = None,
    username: str = "",
    status: int = 200,
) -> Response:
    hidden = authorize_params(params)
    return page(
        "login.html",
        status,
        client_name=authorization.client_name,
        action=page_base() + "/oauth/authorize",
        params=hidden,
        provider_params=hidden,
        error=error,
        username=username,
        provider=runtime.oidc.config.name if runtime.oidc else None,
    )


async def validated(
    runtime: Runtime, params: dict[str, str], iss: str
) -> ValidAuthorization | Response:
    """The valid request, or the answer to a bad one: an error page, or a redirect with an error
    (and `iss`, this server's issuer)."""
    request = _authorization(params)
    try:
        return await runtime.oauth.validate(request)
    except BadClient as error:
        return error_page(str(error))
    except AuthorizeError as error:
        assert request.redirect_uri is not None  # validate checked it before raising this
        return _refused(request.redirect_uri, request.state, error, iss)


def _described(text: str) -> str:
    """An error_description as RFC 6749 (4.1.2.1, 5.2) allows it: printable ASCII without `"`
    or `\\`. A description may quote what the client sent (a scope, a grant type, a URI), so
    every other character becomes `?`."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


def _refused(
    redirect_uri: str, state: str | None, error: AuthorizeError, iss: str
) -> RedirectResponse:
    """Back to the client's (checked) redirect URI with the error, its state if it sent one, and
    the issuer (RFC 9207)."""
    answer = {"error": error.error, "error_description": _described(error.description)}
    if state:
        answer["state"] = state
    return see_other(with_query(redirect_uri, answer | {"iss": iss}))


def _foreign_resource(request: Request, runtime: Runtime, resource: str | None) -> str | None:
    """Why the RFC 8707 `resource` asked for is not this server's, or None when it is (or none
    is asked for). Tokens are only ever for this server: one issued "for" another resource
    could be handed to it, and replayed here by it."""
    if resource is None:
        return None
    base = issuer(request, runtime)
    ours, asked = urlsplit(base), urlsplit(resource)
    same_origin = (asked.scheme.lower(), asked.netloc.lower()) == (
        ours.scheme.lower(),
        ours.netloc.lower(),
    )
    prefix = ours.path.rstrip("/")
    if same_origin and (asked.path.rstrip("/") == prefix or asked.path.startswith(prefix + "/")):
        return None
    return f"tokens of this server are for {base} only, not {resource}"


async def validated_query(
    request: Request, runtime: Runtime
) -> tuple[ValidAuthorization, dict[str, str]] | Response:
    """The authorization request in the query string and its parameters, or the answer to it."""
    try:
        params = _params(request.query_params.multi_items())
    except BadParameter as error:
        return error_page(str(error))
    iss = issuer(request, runtime)
    checked = await validated(runtime, params, iss)
    if isinstance(checked, Response):
        return checked
    foreign = _foreign_resource(request, runtime, params.get("resource"))
    if foreign is not None:  # the client and its redirect URI are known good: tell it there
        target = AuthorizeError("invalid_target", foreign)
        return _refused(checked.redirect_uri, checked.state, target, iss)
    return checked, params


@router.get("/oauth/authorize")
async def authorize(request: Request, runtime: RuntimeDep) -> Response:
    """The start of the authorization code grant: the sign-in form."""
    serve_pages(request, runtime.settings)
    checked = await validated_query(request, runtime)
    if isinstance(checked, Response):
        return checked
    return _login(runtime, *checked)


@router.post("/oauth/authorize")
async def authorize_form(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in form's and the consent form's answers."""
    serve_pages(request, runtime.settings)
    try:
        form = await read_form(request)
    except BadParameter as error:
        return error_page(str(error))
    if form.get("step") == "consent":
        decision = form.get("decision")
        if decision not in ("allow", "deny") or not form.get("ticket"):
            return error_page("the consent form was incomplete; start again")
        try:
            target = await runtime.oauth.decide(form["ticket"], allow=decision == "allow")
        except BadClient as error:
            return error_page(str(error))
        # RFC 9207: the answer names its issuer, so that a client of several servers can tell
        # which one answered (mix-up attacks).
        return see_other(with_query(target, {"iss": issuer(request, runtime)}))
    checked = await validated(runtime, form, issuer(request, runtime))
    if isinstance(checked, Response):
        return checked
    signed = await signed_in(
        request,
        runtime,
        form,
        lambda error, status: _login(
            runtime, checked, form, error=error, username=typed_username(form), status=status
        ),
    )
    if isinstance(signed, Response):
        return signed
    return await consent_page(runtime, checked, signed)


def typed_username(form: dict[str, str]) -> str:
    """The sign-in form's username, as typed less surrounding spaces."""
    return form.get("username", "").strip()


async def signed_in(
    request: Request,
    runtime: Runtime,
    form: dict[str, str],
    again: Callable[[str, int], Response],
) -> UserInfo | Response:
    """The user a sign-in form's username and password sign in; else `again(why, status)`, the
    form shown again (429 with Retry-After past the sign-in rate limit)."""
    address = client_address(request)
    try:
        user = await runtime.users.sign_in(
            typed_username(form), form.get("password", ""), address=address
        )
    except TooManyAttempts as error:
        response = again(str(error), 429)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    if user is None:
        return again("wrong username or password", 401)
    return user


async def consent_page(runtime: Runtime, checked: ValidAuthorization, user: UserInfo) -> Response:
    """The consent form of a signed-in user, with a one-time ticket."""
    ticket = await runtime.oauth.open_consent(checked, user.id)
    scopes = [(scope, SCOPE_DESCRIPTIONS[scope]) for scope in checked.scopes]
    return page(
        "consent.html",
        client_name=checked.client_name,
        username=user.username,
        scopes=scopes,
        ticket=ticket,
    )


def _credentials(request: Request, form: dict[str, str]) -> ClientCredentials:
    """The client's credentials from HTTP Basic (client_secret_basic) or the body."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return ClientCredentials(form.get("client_id") or None, form.get("client_secret") or None)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, colon, secret = decoded.partition(":")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if not colon or "\x00" in client_id + secret:
        raise TokenError("invalid_client", "malformed Basic credentials", 401)
    # RFC 6749 (2.3) has a client use one method; a client that sends its secret both ways
    # (which a GPT's "Basic authorization header" setting may do) is read when they agree.
    if form.get("client_secret") and form["client_secret"] != secret:
        raise TokenError("invalid_request", "client_secret differs from the Basic credentials")
    if form.get("client_id") and form["client_id"] != client_id:
        raise TokenError("invalid_request", "client_id differs from the Basic credentials")
    return ClientCredentials(client_id, secret, basic=True)


def _token_error(error: TokenError) -> JSONResponse:
    challenge = {"WWW-Authenticate": 'Basic realm="gptactions"'} if error.status == 401 else None
    return oauth_error_response(error.error, _described(error.description), error.status, challenge)


async def _token_form(request: Request) -> dict[str, str]:
    try:
        form = await read_form(request)
    except BadParameter as error:
        raise TokenError("invalid_request", str(error)) from None
    if not form:
        raise TokenError(
            "invalid_request", "send the parameters as application/x-www-form-urlencoded"
        )
    return form


@router.post("/oauth/token")
async def token(request: Request, runtime: RuntimeDep) -> Response:
    """The token endpoint: authorization_code and refresh_token grants."""
    try:
        form = await _token_form(request)
        credentials = _credentials(request, form)
        grant = form.get("grant_type")
        foreign = _foreign_resource(request, runtime, form.get("resource"))
        if foreign is not None:
            raise TokenError("invalid_target", foreign)
        if grant == "authorization_code":
            issued = await runtime.oauth.exchange_code(
                credentials,
                code=form.get("code"),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
            )
        elif grant == "refresh_token":
            issued = await runtime.oauth.refresh(
                credentials, refresh_token=form.get("refresh_token"), scope=form.get("scope")
            )
        elif not grant:
            raise TokenError("invalid_request", "the grant_type parameter is required")
        else:
            raise TokenError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    except TokenError as error:
        return _token_error(error)
    body: dict[str, Any] = issued.as_json()
    return JSONResponse(body, headers=NO_STORE)


@router.post("/oauth/register")
async def register(request: Request, runtime: RuntimeDep) -> Response:
    """RFC 7591 dynamic client registration, when GPTACTIONS_OAUTH_DYNAMIC_REGISTRATION is on:
    a public client (PKCE, no secret) registers its redirect URIs and gets a client id."""
    if not runtime.settings.oauth_dynamic_registration:
        return error_response(
            404,
            "clients do not register themselves here: an operator registers them with "
            "`gptactions oauth clients create` (or sets GPTACTIONS_OAUTH_DYNAMIC_REGISTRATION)",
            code="not_found",
        )
    try:
        await runtime.users.throttle(f"register:{client_address(request)}")
    except TooManyAttempts as error:
        retry = {"Retry-After": str(error.retry_after)}
        return oauth_error_response("invalid_request", str(error), 429, retry)
    try:
        metadata = json.loads(await request.body())
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        metadata = None
    try:
        info, answer = await register_client(runtime.oauth, metadata)
    except RegistrationError as error:
        return oauth_error_response(error.error, _described(error.description))
    log.info("OAuth client %s registered itself as %r", info.id, info.name)
    return JSONResponse(answer, 201, headers=NO_STORE)


@router.post("/oauth/revoke")
async def revoke(request: Request, runtime: RuntimeDep) -> Response:
    """RFC 7009 token revocation: 200 whether or not the token was known; 400
    `unauthorized_client` for a token issued to another client, which stays valid."""
    try:
        form = await _token_form(request)
        await runtime.oauth.revoke(
            _credentials(request, form),
            token=form.get("token"),
            hint=form.get("token_type_hint"),
        )
    except TokenError as error:
        return _token_error(error)
    return Response(status_code=200, headers=NO_STORE)


@router.get("/privacy")
async def privacy(runtime: RuntimeDep) -> Response:
    """The privacy page a public GPT links to, written from the server's settings."""
    settings = runtime.settings
    return page(
        "privacy.html",
        contact=settings.privacy_contact,
        oauth=True,
        upstream=bool(settings.upstream_url or settings.backends),
        access_minutes=settings.oauth_access_token_lifetime // 60,
        refresh_days=settings.oauth_refresh_token_lifetime // 86400,
        retention=settings.log_retention,
        provider=runtime.oidc.config.name if runtime.oidc else None,
        username_claim=settings.oidc_username_claim,
    )
