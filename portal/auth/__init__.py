"""OAuth for the portal: its authorization server and protected resource, and its upstream credentials."""

from portal.auth._fetch import BlockedURLError, FetchError, FetchPolicy, fetch_json

__all__ = ["BlockedURLError", "FetchError", "FetchPolicy", "fetch_json"]
