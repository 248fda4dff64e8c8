"""Dockyard's portal: one governed MCP endpoint in front of many MCP servers.

The public surface is what this module exports; everything else is internal.
"""

from portal.app import Portal, create_app
from portal.audit import AuditEvent, AuditLog
from portal.catalog import Catalog
from portal.channel import NULL_CHANNEL, ClientChannel
from portal.config import AuthSettings, PortalSettings, ServerSettings, Settings, load_settings
from portal.errors import (
    ConfigError,
    DockyardError,
    GatewayError,
    ServersImportError,
    StorageError,
    UnknownTargetError,
    UpstreamUnavailableError,
    WithheldToolError,
)
from portal.gateway import Gateway
from portal.policy_seam import AllowLocal, Decision, Policy, Request
from portal.principal import LOCAL_PRINCIPAL, Principal

__all__ = [
    "LOCAL_PRINCIPAL",
    "NULL_CHANNEL",
    "AllowLocal",
    "AuditEvent",
    "AuditLog",
    "AuthSettings",
    "Catalog",
    "ClientChannel",
    "ConfigError",
    "Decision",
    "DockyardError",
    "Gateway",
    "GatewayError",
    "Policy",
    "Portal",
    "PortalSettings",
    "Principal",
    "Request",
    "ServerSettings",
    "ServersImportError",
    "Settings",
    "StorageError",
    "UnknownTargetError",
    "UpstreamUnavailableError",
    "WithheldToolError",
    "create_app",
    "load_settings",
]
