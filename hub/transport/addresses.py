"""A client's address, for the per-address limits, behind trusted proxies or not."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


_untrusted_forwarders: set[str] = set()  # warned of once per process


def client_address(environ: dict[str, Any], trusted: Networks) -> str:
    """The client's address, for the per-address limits: the TCP peer's, unless the peer is a
    trusted proxy (``HUB_TRUSTED_PROXIES``); then the rightmost X-Forwarded-For entry that is
    not itself a trusted proxy. Entries left of it were written by whoever sent the request
    and prove nothing. engine.io's aiohttp environ fixes REMOTE_ADDR at 127.0.0.1, so the peer
    comes from the aiohttp request itself."""
    request: web.BaseRequest | None = environ.get("aiohttp.request")
    remote = request.remote if request is not None else None
    peer = _ip(remote) if remote else None
    if request is None or peer is None:
        return remote or "unknown"
    if not trusted or not _within(peer, trusted):
        if not _untrusted_forwarders and "X-Forwarded-For" in request.headers:
            _untrusted_forwarders.add(str(peer))
            log.warning(
                "connections from %s carry X-Forwarded-For, but HUB_TRUSTED_PROXIES does not list "
                "it: the header is ignored, and every client behind it shares its per-address "
                "limits (said once)",
                peer,
            )
        return str(peer)
    hops = [
        hop.strip() for value in request.headers.getall("X-Forwarded-For", ()) for hop in value.split(",")
    ]
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break  # a trusted proxy never writes this: stop at the last proxy known
        peer = address
        if not _within(address, trusted):
            break
    return str(peer)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, IPv4-mapped IPv6 as plain IPv4 (one client, one rate-limit key); None if
    ``text`` is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Networks) -> bool:
    return any(address in network for network in networks)
