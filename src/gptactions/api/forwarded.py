"""Where a request came from: the proxy headers of trusted proxies, and this server's public URL.

Only a peer in `GPTACTIONS_TRUSTED_PROXIES` may say, through `Forwarded` (RFC 7239) or
`X-Forwarded-For/-Proto/-Host/-Prefix`, which client it forwards and which URL that client used;
anyone else's such headers are ignored (by default nobody's). This is the only place that reads
them: uvicorn's own proxy-header handling is off (`serving.py`), so the two cannot disagree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gptactions.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PREFIX_STATE = "forwarded_prefix"
_MAX_PREFIX = 256


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP from a header or the peer (`[v6]:port`, `v4:port` and quotes allowed), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(host: str | None, networks: Sequence[Network]) -> bool:
    """Whether a peer's address is in one of the trusted networks."""
    address = _address(host) if host else None
    return address is not None and any(address in network for network in networks)


def _forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a `Forwarded` header (RFC 7239), each as {for, proto, host}."""
    elements = []
    for element in value.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            name, _, found = pair.partition("=")
            if found:
                pairs[name.strip().lower()] = found.strip().strip('"')
        elements.append(pairs)
    return elements


def _last(value: str | None) -> str | None:
    """The rightmost of a comma-separated header: what the nearest (trusted) proxy added."""
    if not value:
        return None
    part = value.rsplit(",", 1)[-1].strip()
    return part or None


def _is_prefix(prefix: str | None) -> bool:
    """Whether X-Forwarded-Prefix holds a plain path: `/gpt`, never a URL or a script."""
    return (
        prefix is not None
        and len(prefix) <= _MAX_PREFIX
        and prefix.startswith("/")
        and "//" not in prefix
        and all(c.isalnum() or c in "/-._~" for c in prefix)
    )


class ForwardedHeaders:
    """For a trusted peer: the client's address, scheme, host and path prefix from its headers."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the scope of a forwarded request; leave every other one as it is."""
        client = scope.get("client")
        if (
            scope["type"] in ("http", "websocket")
            and self.trusted
            and client
            and is_trusted(client[0], self.trusted)
        ):
            self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        chain: list[str] = []
        proto = host = None
        if "forwarded" in headers:
            elements = _forwarded(headers["forwarded"])
            chain = [e["for"] for e in elements if "for" in e]
            proto = elements[-1].get("proto") if elements else None
            host = elements[-1].get("host") if elements else None
        else:
            chain = [p.strip() for p in headers.get("x-forwarded-for", "").split(",") if p.strip()]
            proto = _last(headers.get("x-forwarded-proto"))
            host = _last(headers.get("x-forwarded-host"))
        # The client is the rightmost address that is not itself one of our proxies.
        for hop in reversed(chain):
            address = _address(hop)
            if address is None:
                break
            if not any(address in network for network in self.trusted):
                scope["client"] = (str(address), 0)
                break
        if proto and proto.lower() in ("http", "https"):
            secure = proto.lower() == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
        if host and all(c.isalnum() or c in ".-:[]" for c in host):
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"] + [
                (b"host", host.encode("latin-1"))
            ]
        prefix = _last(headers.get("x-forwarded-prefix"))
        if _is_prefix(prefix):
            assert prefix is not None
            scope.setdefault("state", {})[PREFIX_STATE] = prefix.rstrip("/")


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's client, see ForwardedHeaders), for rate limits."""
    return request.client.host if request.client else "unknown"


def public_origin(request: Request, settings: Settings) -> str:
    """This server's URL as the caller reaches it: GPTACTIONS_PUBLIC_URL, else the request's own
    scheme, host and port (a trusted proxy's, see ForwardedHeaders), with its path prefix."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    prefix = request.scope.get("state", {}).get(PREFIX_STATE, "")
    return f"{request.url.scheme}://{request.url.netloc}{prefix}"


def public_path(request: Request, settings: Settings) -> str:
    """The path prefix under which the caller reaches this server ('' at the root, `/gpt` behind
    a proxy's prefix), which the URLs it is given must start with."""
    return urlsplit(public_origin(request, settings)).path.rstrip("/")


def local_origin(settings: Settings) -> str:
    """The URL outside a request (the command line): GPTACTIONS_PUBLIC_URL, else where it
    listens."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (reading the setting, not binding)
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"
