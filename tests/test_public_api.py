"""The public surface of each package is pinned: changing it is a deliberate act."""

import portal
import portal.upstreams
import servers


def test_the_portal_package_exports_exactly_its_public_surface() -> None:
    assert sorted(portal.__all__) == [
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
        "LOCAL_PRINCIPAL",
        "NULL_CHANNEL",
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
    assert all(hasattr(portal, name) for name in portal.__all__)


def test_the_upstreams_package_exports_its_supervisor() -> None:
    assert sorted(portal.upstreams.__all__) == [
        "FORWARDED_CAPABILITIES",
        "Listing",
        "SessionHandlers",
        "Upstream",
        "UpstreamState",
        "resolve_inprocess",
        "stdio_parameters",
    ]


def test_built_in_servers_are_registered_by_name() -> None:
    assert sorted(servers.__all__) == ["BUILTINS", "DEFAULT_ENABLED"]
    assert set(servers.DEFAULT_ENABLED) <= set(servers.BUILTINS)
