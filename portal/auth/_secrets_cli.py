"""``dockyard secrets`` and ``dockyard servers authorize``: the vault from the command line.

``dockyard secrets set SERVER --header NAME | --env NAME``  store a secret (value from a prompt or stdin, never argv)
``dockyard secrets list [SERVER]``                         names, kinds and grant states; never a value
``dockyard secrets delete SERVER --header NAME | --env NAME | --grant SUBJECT``
``dockyard servers authorize SERVER``                      the consent link that lets the portal list an OAuth upstream
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from portal.auth._vault import SecretRef, Vault, load_vault_key
from portal.config import Settings
from portal.errors import ConfigError

__all__ = ["add_secrets_commands", "add_servers_authorize", "grant_problems"]

LoadSettings = Callable[[argparse.Namespace], Settings]
_GRANT_KINDS = ("oauth-grant",)


def _vault(settings: Settings) -> Vault:
    from portal.store import open_engine

    return Vault(open_engine(settings.database_url), load_vault_key(Path(settings.portal.data_dir), os.environ))


def _target(args: argparse.Namespace, settings: Settings) -> tuple[str, str]:
    """(kind, name) of ``--header``/``--env``, checked against the server's kind."""
    server = settings.servers.get(args.server)
    if server is None:
        raise ConfigError(settings.source, f"servers.{args.server}", "no such server in the configuration")
    kind, name = ("header", args.header) if args.header else ("env", args.env)
    wanted = "http" if kind == "header" else "stdio"
    if server.kind != wanted:
        what = "a 'url' server" if kind == "header" else "a 'command' server"
        raise ConfigError(settings.source, f"servers.{args.server}", f"--{kind} applies to {what} only")
    return kind, name


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not echoed): ")
    else:
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not value:
        raise ConfigError("<stdin>", name, "empty value; nothing stored")
    return value


def _set(load: LoadSettings, args: argparse.Namespace) -> int:
    settings = load(args)
    kind, name = _target(args, settings)
    value = _read_value(name)
    vault = _vault(settings)
    try:
        vault.put(SecretRef(kind, args.server, name), value)
    finally:
        vault.engine.dispose()
    print(f"stored {kind} {name!r} of {args.server!r} (encrypted); it is used from the next connection")
    return 0


def _list(load: LoadSettings, args: argparse.Namespace) -> int:
    settings = load(args)
    vault = _vault(settings)
    try:
        rows = vault.list(kinds=("header", "env", *_GRANT_KINDS), server=args.server)
    finally:
        vault.engine.dispose()
    print(f"{'SERVER':<20} {'KIND':<12} {'NAME / SUBJECT':<32} {'STATE':<6} EXPIRES / DETAIL")
    for row in rows:
        ref = row.ref
        label = ref.subject if ref.kind in _GRANT_KINDS else ref.name
        extra = row.detail or (row.expires_at.isoformat(timespec="seconds") if row.expires_at else "")
        print(f"{ref.server:<20} {ref.kind:<12} {label:<32} {row.status:<6} {extra}")
    return 0


def _delete(load: LoadSettings, args: argparse.Namespace) -> int:
    settings = load(args)
    if args.grant:
        ref = SecretRef("oauth-grant", args.server, "grant", args.grant)
    else:
        kind, name = _target(args, settings)
        ref = SecretRef(kind, args.server, name)
    vault = _vault(settings)
    try:
        found = vault.delete(ref)
    finally:
        vault.engine.dispose()
    if not found:
        print(f"dockyard: nothing stored as {ref.kind} {ref.subject or ref.name!r} of {ref.server!r}", file=sys.stderr)
        return 1
    print(f"deleted {ref.kind} {ref.subject or ref.name!r} of {ref.server!r}")
    return 0


def add_secrets_commands(secrets: argparse.ArgumentParser, load: LoadSettings) -> None:
    """Register ``dockyard secrets set|list|delete`` under ``secrets``."""
    sub = secrets.add_subparsers(dest="secrets_command", required=True)
    put = sub.add_parser("set", help="store a header or env secret of a server (value from a prompt or stdin)")
    put.add_argument("server")
    which = put.add_mutually_exclusive_group(required=True)
    which.add_argument("--header", metavar="NAME", help="a header sent to a 'url' server")
    which.add_argument("--env", metavar="NAME", help="an environment variable of a 'command' server")
    put.set_defaults(func=partial(_set, load))
    listing = sub.add_parser("list", help="names of stored secrets and OAuth grants (never values)")
    listing.add_argument("server", nargs="?")
    listing.set_defaults(func=partial(_list, load))
    drop = sub.add_parser("delete", help="delete a stored secret or a user's OAuth grant")
    drop.add_argument("server")
    which = drop.add_mutually_exclusive_group(required=True)
    which.add_argument("--header", metavar="NAME")
    which.add_argument("--env", metavar="NAME")
    which.add_argument("--grant", metavar="SUBJECT", help="a user's OAuth grant, e.g. user:alice")
    drop.set_defaults(func=partial(_delete, load))


def _authorize(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._upstream_oauth import CATALOG_SUBJECT, consent_link
    from portal.sealing import Sealer, load_or_create_key

    settings = load(args)
    server = settings.servers.get(args.server)
    if server is None or server.auth != "oauth":
        raise ConfigError(settings.source, f"servers.{args.server}", 'not a server with auth = "oauth"')
    sealer = Sealer(load_or_create_key(Path(settings.portal.data_dir) / "state.key"))
    link = consent_link(settings.portal.public_url, sealer, args.server, CATALOG_SUBJECT)
    print(f"Open this link within 15 minutes, while the portal runs, to let it list {args.server!r}'s tools:")
    print(link)
    return 0


def add_servers_authorize(servers_sub: Any, load: LoadSettings) -> None:  # argparse's subparsers action is private
    """Register ``dockyard servers authorize SERVER``."""
    authorize = servers_sub.add_parser("authorize", help="print the consent link for an OAuth upstream's catalog")
    authorize.add_argument("server")
    authorize.set_defaults(func=partial(_authorize, load))


def grant_problems(settings: Settings) -> list[str]:
    """One line per dead upstream OAuth grant, for ``dockyard servers`` (U2: the admin sees them)."""
    if not any(s.auth == "oauth" for s in settings.servers.values()):
        return []
    vault = _vault(settings)
    try:
        rows = vault.list(kinds=_GRANT_KINDS)
    finally:
        vault.engine.dispose()
    return [
        f"{row.ref.server}: the OAuth grant of {row.ref.subject} is dead ({row.detail}); "
        "its user gets a new consent link at the next call"
        for row in rows
        if row.status == "dead"
    ]
