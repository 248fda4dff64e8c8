"""The ``dockyard`` command line.

``dockyard serve``             run the portal
``dockyard servers``           list upstream servers with status, tool counts and last error
``dockyard servers import F``  add the servers of an mcpServers JSON file to the config
``dockyard tools pending``     list tools whose definition changed upstream and is withheld
``dockyard tools accept S [T]`` approve the changed definitions of server S (or just tool T)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from portal.config import Settings, load_settings
from portal.errors import DockyardError

__all__ = ["main"]

_DEFAULT_CONFIG = Path("dockyard.toml")


def _config_path(value: str | None) -> Path | None:
    """``--config``, else ``$DOCKYARD_CONFIG``, else ``./dockyard.toml`` if it exists, else embedded defaults."""
    if value:
        return Path(value)
    if env := os.environ.get("DOCKYARD_CONFIG"):
        return Path(env)
    return _DEFAULT_CONFIG if _DEFAULT_CONFIG.exists() else None


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(_config_path(args.config))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal.app import create_app

    settings = _settings(args).with_overrides(host=args.host, port=args.port)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    print(f"dockyard: serving {settings.portal.public_url}/mcp (config: {settings.source})", file=sys.stderr)
    uvicorn.run(
        app,
        host=settings.portal.bind_host,
        port=settings.portal.bind_port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return 0


def _servers(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from portal.store import UpstreamStatus, open_engine

    settings = _settings(args)
    engine = open_engine(settings.database_url)
    with Session(engine) as session:
        rows = {r.server: r for r in session.exec(select(UpstreamStatus)).all()}
    engine.dispose()
    header = f"{'SERVER':<20} {'KIND':<9} {'STATE':<10} {'TOOLS':>5} {'HELD':>4}  LAST ERROR"
    print(header)
    for name, server in sorted(settings.servers.items()):
        row = rows.get(name)
        state = "disabled" if not server.enabled else (row.state if row else "never-run")
        tools = str(row.tools) if row else "-"
        held = str(row.withheld) if row else "-"
        error = (row.last_error or "") if row else ""
        print(f"{name:<20} {server.kind:<9} {state:<10} {tools:>5} {held:>4}  {error[:100]}")
    return 0


def _servers_import(args: argparse.Namespace) -> int:
    from portal.importer import import_servers

    config = _config_path(args.config) or _DEFAULT_CONFIG
    names = import_servers(Path(args.file), config)  # validates the whole new file before replacing it
    print(f"imported {len(names)} server(s) into {config}: {', '.join(names)}")
    return 0


def _tools_pending(args: argparse.Namespace) -> int:
    from portal.pins import PinStore
    from portal.store import open_engine

    settings = _settings(args)
    engine = open_engine(settings.database_url)
    pending = PinStore(engine).pending(args.server)
    engine.dispose()
    if not pending:
        print("no withheld tools")
    for pin in pending:
        print(
            f"{pin.server} {pin.tool}: changed {pin.pending_since:%Y-%m-%d %H:%M:%S}, pinned {pin.digest[:12]}, "
            f"now {(pin.pending_digest or '')[:12]}"
        )
    return 0


def _tools_accept(args: argparse.Namespace) -> int:
    from portal.pins import PinStore
    from portal.store import open_engine

    settings = _settings(args)
    if args.server not in settings.servers:
        raise DockyardError(f"no server {args.server!r} in {settings.source}")
    engine = open_engine(settings.database_url)
    accepted = PinStore(engine).accept(args.server, args.tool)
    engine.dispose()
    if not accepted:
        what = f"tool {args.tool!r} of " if args.tool else ""
        print(f"nothing to accept: {what}server {args.server!r} has no withheld definition")
        return 1
    print(f"accepted {len(accepted)} definition(s) of {args.server}: {', '.join(accepted)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="Dockyard: one governed endpoint for MCP servers.")
    parser.add_argument("--config", "-c", help="config file (default: $DOCKYARD_CONFIG or ./dockyard.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the portal")
    serve.add_argument("--host", help="address to bind (default: host of [portal] public_url)")
    serve.add_argument("--port", type=int, help="port to bind (default: port of [portal] public_url)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    servers = commands.add_parser("servers", help="list upstream servers, or import them")
    servers.set_defaults(func=_servers)
    servers_sub = servers.add_subparsers(dest="servers_command")
    servers_sub.add_parser("list", help="list servers with status (the default)").set_defaults(func=_servers)
    imp = servers_sub.add_parser("import", help="import an mcpServers JSON file (Claude Desktop, Cursor, VS Code)")
    imp.add_argument("file")
    imp.set_defaults(func=_servers_import)

    tools = commands.add_parser("tools", help="review tool definitions that changed upstream")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True)
    pending = tools_sub.add_parser("pending", help="list withheld tools")
    pending.add_argument("server", nargs="?")
    pending.set_defaults(func=_tools_pending)
    accept = tools_sub.add_parser("accept", help="approve changed definitions")
    accept.add_argument("server")
    accept.add_argument("tool", nargs="?")
    accept.set_defaults(func=_tools_accept)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DockyardError as error:
        print(f"dockyard: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
