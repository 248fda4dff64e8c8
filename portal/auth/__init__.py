"""OAuth for the portal: its authorization server and protected resource, and its upstream credentials."""

from portal.auth._credentials import UpstreamCredentials, upstream_credentials
from portal.auth._errors import AuthError, ClientMetadataError, InvalidTokenError, UserError
from portal.auth._fetch import BlockedURLError, FetchError, FetchPolicy, fetch_json
from portal.auth._guard import PRINCIPAL_SCOPE_KEY, ResourceGuard, protected_resource_metadata
from portal.auth._scopes import DEFAULT_SCOPES, SCOPES, can_call, scopes_needed
from portal.auth._service import CLI_CLIENT_ID, MAX_TOKEN_TTL, AuthService
from portal.auth._tokens import TokenService, VerifiedToken
from portal.auth._upstream_oauth import (
    CATALOG_SUBJECT,
    AuthorizationError,
    DiscoveryError,
    UpstreamAuthError,
    UpstreamOAuth,
)
from portal.auth._upstream_routes import upstream_oauth_routes
from portal.auth._users import LoginThrottle, User, UserStore
from portal.auth._vault import SecretCorruptError, SecretRef, Vault, VaultError, VaultKeyError, load_vault_key

__all__ = [
    "CATALOG_SUBJECT",
    "CLI_CLIENT_ID",
    "DEFAULT_SCOPES",
    "MAX_TOKEN_TTL",
    "PRINCIPAL_SCOPE_KEY",
    "SCOPES",
    "AuthError",
    "AuthService",
    "AuthorizationError",
    "BlockedURLError",
    "ClientMetadataError",
    "DiscoveryError",
    "FetchError",
    "FetchPolicy",
    "InvalidTokenError",
    "LoginThrottle",
    "ResourceGuard",
    "SecretCorruptError",
    "SecretRef",
    "TokenService",
    "UpstreamAuthError",
    "UpstreamCredentials",
    "UpstreamOAuth",
    "User",
    "UserError",
    "UserStore",
    "Vault",
    "VaultError",
    "VaultKeyError",
    "VerifiedToken",
    "can_call",
    "fetch_json",
    "load_vault_key",
    "protected_resource_metadata",
    "scopes_needed",
    "upstream_credentials",
    "upstream_oauth_routes",
]
