"""Dependencies of the routes: the runtime, and the caller's key checked for a scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from gptactions.runtime import Runtime
from gptactions.services.errors import ServiceError
from gptactions.services.keys import Principal, parse_authorization
from gptactions.services.oauth import ACCESS_PREFIX

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gptactions"'}


def get_runtime(request: Request) -> Runtime:
    """The runtime the app was built with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, from the key in the Authorization header; 401 without a valid key."""
    secret = parse_authorization(request.headers.get("authorization"))
    if secret is None:
        raise ServiceError(
            "an API key is required: send 'Authorization: Bearer <key>'",
            401,
            "unauthorized",
            headers=_CHALLENGE,
        )
    runtime.require_database()
    if secret.startswith(ACCESS_PREFIX):
        principal = await runtime.oauth.authenticate(secret)
    else:
        principal = await runtime.keys.authenticate(secret)
    if principal is None:
        raise ServiceError(
            "the API key or access token is not valid (unknown, expired or revoked)",
            401,
            "unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="gptactions", error="invalid_token"'},
        )
    request.state.principal = principal
    if runtime.limiter is not None:
        decision = await runtime.limiter.hit(principal.key_id)
        if not decision.allowed:
            runtime.metrics.rate_limited.inc()
            raise ServiceError(
                f"rate limit of {decision.limit} requests exceeded for this API key; "
                f"retry in {decision.reset_after}s",
                429,
                "rate_limited",
                headers={
                    "Retry-After": str(decision.reset_after),
                    "RateLimit-Limit": str(decision.limit),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(decision.reset_after),
                },
            )
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only keys holding `scope` (or admin) through; 403 otherwise."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.allows(scope):
            raise ServiceError(f"this API key lacks the '{scope}' scope", 403, "forbidden")
        return principal

    return check


ChatCaller = Annotated[Principal, Depends(require("chat"))]
ActionsCaller = Annotated[Principal, Depends(require("actions"))]
LogsCaller = Annotated[Principal, Depends(require("logs"))]
AnyCaller = Annotated[Principal, Depends(get_principal)]
