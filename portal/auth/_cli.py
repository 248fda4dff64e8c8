"""``dockyard users`` and ``dockyard token``: accounts and script tokens from the command line.

``dockyard users add NAME [--group G]...``   create a local user (password from a prompt, or stdin when piped)
``dockyard users list``                      users, their groups and state
``dockyard users disable NAME`` / ``enable NAME``  disabling also revokes every grant the user holds
``dockyard users passwd NAME``               set a new password (prompt or stdin)
``dockyard token create --subject S --scope SC [--scope SC]... [--ttl 30d] [--kind service|user] [--group G]...``
                                             mint a recorded, revocable access token; printed on stdout only
``dockyard token list [--all]``              grants of minted tokens (never the tokens)
``dockyard token revoke GRANT_ID``           revoke a grant and every token issued under it, in every process
``dockyard token rekey``                start signing with a new key; the old one verifies until its tokens expire

A password never comes from the command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from portal.auth._errors import AuthError, UserError
from portal.auth._scopes import SCOPES
from portal.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from portal.auth._service import AuthService


__all__ = ["add_token_commands", "add_users_commands", "parse_duration"]

LoadSettings = Callable[[argparse.Namespace], Settings]
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``15m``, ``12h`` or ``30d``.

    Raises:
        AuthError: Not a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise AuthError(f"--ttl must be a number of seconds or like 15m, 12h, 30d; got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@contextmanager
def _engine(settings: Settings) -> Generator[Engine]:
    from portal.store import open_engine

    engine = open_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt} (not echoed): ")
        if getpass.getpass("again: ") != first:
            raise UserError("the two passwords differ; nothing changed")
        return first
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def _users_add(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._users import UserStore

    settings = load(args)
    password = _read_password(f"password for {args.name}")
    with _engine(settings) as engine:
        user = UserStore(engine).add(args.name, password, groups=args.group)
    groups = f" in {', '.join(sorted(user.groups))}" if user.groups else ""
    print(f"added user {user.name}{groups}; they can log in at {settings.portal.public_url}/oauth/login")
    return 0


def _users_list(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._users import UserStore

    with _engine(load(args)) as engine:
        users = UserStore(engine).list()
    if not users:
        print("no users; add one with: dockyard users add NAME", file=sys.stderr)
    print(f"{'USER':<24} {'STATE':<9} {'SOURCE':<7} {'LAST LOGIN':<17} GROUPS")
    for user, record in users:
        last = f"{record.last_login_at:%Y-%m-%d %H:%M}" if record.last_login_at else "never"
        state = "disabled" if user.disabled else "active"
        print(f"{user.name:<24} {state:<9} {user.source:<7} {last:<17} {','.join(sorted(user.groups))}")
    return 0


def _users_disable(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._ledger import Ledger
    from portal.auth._users import UserStore

    with _engine(load(args)) as engine:
        UserStore(engine).set_disabled(args.name, args.disable)
        revoked = Ledger(engine).revoke_subject(args.name, "the user was disabled") if args.disable else 0
    if args.disable:
        print(f"disabled {args.name}; revoked {revoked} grant(s): their tokens stop working now")
    else:
        print(f"enabled {args.name}")
    return 0


def _users_passwd(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._users import UserStore

    settings = load(args)
    password = _read_password(f"new password for {args.name}")
    with _engine(settings) as engine:
        UserStore(engine).set_password(args.name, password)
    print(f"changed the password of {args.name}")
    return 0


def add_users_commands(parser: argparse.ArgumentParser, load: LoadSettings) -> None:
    """``dockyard users ...`` under ``parser``."""
    sub = parser.add_subparsers(dest="users_command", required=True)
    add = sub.add_parser("add", help="create a local user; the password comes from a prompt or stdin")
    add.add_argument("name")
    add.add_argument("--group", action="append", default=[], help="a group (repeat); 'admins' may grant admin")
    add.set_defaults(func=partial(_users_add, load))
    sub.add_parser("list", help="users, their groups and state").set_defaults(func=partial(_users_list, load))
    for name, disable in (("disable", True), ("enable", False)):
        command = sub.add_parser(name, help=f"{name} a user" + (" and revoke their tokens" if disable else ""))
        command.add_argument("name")
        command.set_defaults(func=partial(_users_disable, load), disable=disable)
    passwd = sub.add_parser("passwd", help="set a user's password (prompt or stdin)")
    passwd.add_argument("name")
    passwd.set_defaults(func=partial(_users_passwd, load))


def _service(settings: Settings, engine: Engine) -> AuthService:
    from portal.auth._service import AuthService
    from portal.auth._vault import Vault, load_vault_key
    from portal.sealing import Sealer, load_or_create_key

    data_dir = Path(settings.portal.data_dir)
    sealer = Sealer(load_or_create_key(data_dir / "state.key"))
    vault = Vault(engine, load_vault_key(data_dir, os.environ))
    return AuthService(settings, engine, sealer, vault=vault, fetcher=None)


def _token_create(load: LoadSettings, args: argparse.Namespace) -> int:
    settings = load(args)
    scopes = [s for value in args.scope for s in value.replace(",", " ").split()]
    with _engine(settings) as engine:
        service = _service(settings, engine)
        token, grant = service.mint(
            args.subject,
            scopes=scopes,
            ttl=parse_duration(args.ttl),
            kind=args.kind,
            groups=args.group,
            label=args.label or f"cli: {getpass.getuser()}",
        )
    print(token)
    print(
        f"grant {grant.id}: {grant.kind}:{grant.subject} scope {grant.scope!r} until {grant.expires_at:%Y-%m-%d %H:%M} "
        f"UTC (dockyard token revoke {grant.id})",
        file=sys.stderr,
    )
    return 0


def _token_list(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._ledger import Ledger

    with _engine(load(args)) as engine:
        grants = Ledger(engine).grants(live_only=not args.all)
    print(f"{'GRANT':<32} {'PRINCIPAL':<28} {'CLIENT':<24} {'EXPIRES':<16} {'STATE':<8} SCOPE")
    for g in grants:
        state = "revoked" if g.revoked_at else "live"
        client = g.client_id if len(g.client_id) <= 24 else g.client_id[:21] + "..."
        print(
            f"{g.id:<32} {g.kind + ':' + g.subject:<28} {client:<24} {g.expires_at:%Y-%m-%d %H:%M} {state:<8} {g.scope}"
        )
    return 0


def _token_revoke(load: LoadSettings, args: argparse.Namespace) -> int:
    from portal.auth._ledger import Ledger

    with _engine(load(args)) as engine:
        done = Ledger(engine).revoke_grant(args.grant, "revoked with dockyard token revoke")
    if not done:
        raise AuthError(f"no live grant {args.grant!r} (dockyard token list shows them)")
    print(f"revoked grant {args.grant}: its tokens are refused from now on")
    return 0


def _token_rotate(load: LoadSettings, args: argparse.Namespace) -> int:
    settings = load(args)
    with _engine(settings) as engine:
        service = _service(settings, engine)
        service.keys.load()
        kid = service.keys.rotate()
    print(f"new signing key {kid}; tokens signed by the previous key stay valid until they expire")
    return 0


def add_token_commands(parser: argparse.ArgumentParser, load: LoadSettings) -> None:
    """``dockyard token ...`` under ``parser``."""
    sub = parser.add_subparsers(dest="token_command", required=True)
    create = sub.add_parser("create", help="mint a recorded, revocable access token for a script")
    create.add_argument("--subject", required=True, help="who the token speaks for, e.g. ci-bot or alice")
    create.add_argument(
        "--scope", action="append", required=True, help=f"a scope (repeat, or comma-separated): {', '.join(SCOPES)}"
    )
    create.add_argument("--ttl", default="30d", help="lifetime: seconds, or 15m, 12h, 30d (default 30d, at most 365d)")
    create.add_argument("--kind", choices=["service", "user"], default="service", help="principal kind (service)")
    create.add_argument("--group", action="append", default=[], help="a group of the principal (repeat)")
    create.add_argument("--label", help="a note shown by 'token list'")
    create.set_defaults(func=partial(_token_create, load))
    listing = sub.add_parser("list", help="live grants (of minted tokens and OAuth clients); never the tokens")
    listing.add_argument("--all", action="store_true", help="revoked and expired ones too")
    listing.set_defaults(func=partial(_token_list, load))
    revoke = sub.add_parser("revoke", help="revoke a grant and every token issued under it")
    revoke.add_argument("grant")
    revoke.set_defaults(func=partial(_token_revoke, load))
    rotate = sub.add_parser("rekey", help="sign with a new key; the previous one verifies until its tokens expire")
    rotate.set_defaults(func=partial(_token_rotate, load))
