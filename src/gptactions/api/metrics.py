"""`GET /metrics`: the Prometheus text page, behind GPTACTIONS_METRICS_TOKEN when it is set."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gptactions.api.deps import RuntimeDep
from gptactions.api.direct import DirectRoute
from gptactions.services.errors import ServiceError
from gptactions.services.keys import parse_authorization

router = APIRouter(route_class=DirectRoute)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Metrics in Prometheus' text format (the token, or an admin key, when a token is set)."""
    token = runtime.settings.metrics_token
    if token is not None:
        presented = parse_authorization(request.headers.get("authorization")) or ""
        if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
            principal = await runtime.keys.authenticate(presented) if presented else None
            if principal is None or not principal.is_admin:
                raise ServiceError(
                    "the metrics token (or an admin API key) is required: "
                    "send 'Authorization: Bearer <token>'",
                    401,
                    "unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="gptactions-metrics"'},
                )
            request.state.principal = principal  # who scraped, for the access line
    await runtime.metrics.refresh_load(runtime.router.backends.values())
    page, content_type = runtime.metrics.render(request.headers.get("accept"))
    return Response(page, media_type=content_type)
