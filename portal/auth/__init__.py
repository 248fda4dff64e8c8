"""OAuth for the portal: its authorization server and protected resource, and its upstream credentials."""

from portal.auth._errors import AuthError, ClientMetadataError, InvalidTokenError, UserError
from portal.auth._fetch import BlockedURLError, FetchError, FetchPolicy, fetch_json
from portal.auth._guard import PRINCIPAL_SCOPE_KEY, ResourceGuard, protected_resource_metadata
from portal.auth._scopes import DEFAULT_SCOPES, SCOPES, can_call, scopes_needed
from portal.auth._service import CLI_CLIENT_ID, MAX_TOKEN_TTL, AuthService
from portal.auth._tokens import TokenService, VerifiedToken
from portal.auth._users import LoginThrottle, User, UserStore

__all__ = [
    "CLI_CLIENT_ID",
    "DEFAULT_SCOPES",
    "MAX_TOKEN_TTL",
    "PRINCIPAL_SCOPE_KEY",
    "SCOPES",
    "AuthError",
    "AuthService",
    "BlockedURLError",
    "ClientMetadataError",
    "FetchError",
    "FetchPolicy",
    "InvalidTokenError",
    "LoginThrottle",
    "ResourceGuard",
    "TokenService",
    "User",
    "UserError",
    "UserStore",
    "VerifiedToken",
    "can_call",
    "fetch_json",
    "protected_resource_metadata",
    "scopes_needed",
]
