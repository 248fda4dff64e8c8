"""Errors raised by the portal.

Hierarchy::

    DockyardError
    ├── ConfigError          invalid configuration: names the file, the key and the reason
    ├── StorageError         the database cannot be opened or migrated
    ├── ServersImportError   an mcpServers file cannot be imported
    ├── StateKeyError        the key file that signs requestState is unusable (too short, open to others)
    ├── ApprovalError        an approval that does not exist, or cannot be decided (already decided, expired)
    ├── TamperedStateError   sealed state (``requestState``) not issued by this portal, or changed
    │   └── ExpiredStateError    sealed state this portal issued whose expiry has passed
    └── GatewayError         a request the choke point refuses, translated once into a protocol error
        ├── UnknownTargetError   no such tool, prompt or resource for this principal
        ├── UpstreamUnavailableError  the upstream that owns the target is not connected
        ├── WithheldToolError    the tool's definition changed upstream and awaits ``dockyard tools accept``
        └── GrantRequiredError   the caller has no usable OAuth grant for the upstream (carries the consent link)
"""

from __future__ import annotations

__all__ = [
    "ApprovalError",
    "ConfigError",
    "DockyardError",
    "ExpiredStateError",
    "GatewayError",
    "GrantRequiredError",
    "ServersImportError",
    "StateKeyError",
    "StorageError",
    "TamperedStateError",
    "UnknownTargetError",
    "UpstreamUnavailableError",
    "WithheldToolError",
]


class DockyardError(Exception):
    """Base of every error the portal raises on purpose."""


class ConfigError(DockyardError):
    """The configuration is invalid.

    Args:
        source: The file (or ``<defaults>``) the configuration came from.
        key: The dotted key that is wrong, or an empty string for the whole file.
        reason: What is wrong and, where possible, what to do.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class StorageError(DockyardError):
    """The database cannot be opened or migrated."""


class ServersImportError(DockyardError):
    """An ``mcpServers`` JSON file cannot be imported."""


class StateKeyError(DockyardError):
    """The key file that signs ``requestState`` cannot be used (SECURITY.md T5, U3)."""


class TamperedStateError(DockyardError):
    """Sealed state was not issued by this portal, was changed, or is malformed (SECURITY.md T5)."""


class ExpiredStateError(TamperedStateError):
    """Sealed state was issued by this portal, but its expiry has passed."""


class GatewayError(DockyardError):
    """A request refused by the choke point."""


class UnknownTargetError(GatewayError):
    """No tool, prompt or resource of that name is visible to the caller."""


class UpstreamUnavailableError(GatewayError):
    """The upstream that owns the target is not connected right now."""


class WithheldToolError(GatewayError):
    """The tool's definition changed upstream and is held until an admin accepts it (SECURITY.md G3)."""


class ApprovalError(DockyardError):
    """An approval does not exist, or cannot be approved or denied (already decided, or expired)."""


class GrantRequiredError(GatewayError):
    """The caller has no usable OAuth grant for an ``auth = "oauth"`` upstream (SECURITY.md U2).

    The message names the server and why (no grant yet, or a dead one) but never the link, so it can go to
    logs and the audit record; ``link`` is the consent URL only the caller is shown.

    Attributes:
        server: The upstream server.
        subject: Whose grant (the principal's label).
        link: Where the caller grants the portal access.
        dead: Whether a grant existed and the upstream stopped honouring it.
    """

    def __init__(self, message: str, *, server: str, subject: str, link: str, dead: bool = False) -> None:
        super().__init__(message)
        self.server = server
        self.subject = subject
        self.link = link
        self.dead = dead
