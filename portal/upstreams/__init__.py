"""Upstream servers of every kind (stdio, remote HTTP/SSE, in-process) behind one supervisor."""

from portal.upstreams._transports import resolve_inprocess, stdio_parameters
from portal.upstreams._upstream import FORWARDED_CAPABILITIES, Listing, SessionHandlers, Upstream, UpstreamState

__all__ = [
    "FORWARDED_CAPABILITIES",
    "Listing",
    "SessionHandlers",
    "Upstream",
    "UpstreamState",
    "resolve_inprocess",
    "stdio_parameters",
]
