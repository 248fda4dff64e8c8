"""The errors of the portal's authorization server and protected resource.

Hierarchy::

    AuthError                  (portal.errors.DockyardError)
    ├── InvalidTokenError      an access token is malformed, foreign, expired or revoked (a 401)
    ├── UserError              a user command cannot be done (unknown user, bad name, empty password)
    └── ClientMetadataError    a Client ID Metadata Document cannot be used (fetch failed, invalid)

OAuth protocol errors (``invalid_grant``, ``invalid_target``...) are authlib's ``OAuth2Error`` and go
back to the client as RFC 6749 error responses; these are the portal's own.
"""

from __future__ import annotations

from portal.errors import DockyardError

__all__ = ["AuthError", "ClientMetadataError", "InvalidTokenError", "UserError"]


class AuthError(DockyardError):
    """Base of the authentication errors."""


class InvalidTokenError(AuthError):
    """An access token was refused; the message says why, without the token."""


class UserError(AuthError):
    """A user account operation cannot be done."""


class ClientMetadataError(AuthError):
    """A Client ID Metadata Document could not be fetched or is not valid."""
