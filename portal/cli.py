"""The ``dockyard`` command line.

``dockyard serve``             run the portal
``dockyard servers``           list upstream servers with status, tool counts and last error
``dockyard servers import F``  add the servers of an mcpServers JSON file to the config
``dockyard tools pending``     list tools whose definition changed upstream and is withheld
``dockyard tools accept S [T]`` approve the changed definitions of server S (or just tool T)
``dockyard policy check [DIR]``  validate the policy files (each problem with file and line)
``dockyard policy test [DIR]``   run the test cases the policy files carry
``dockyard policy explain --as P TOOL [ARGS]``  the decision for one call, and the rules that made it
``dockyard policy schema``     print the JSON Schema of policy files
``dockyard approvals list [--status S | --all] [--json]``  calls held for approval (pending ones by default)
``dockyard approvals show ID``  one held call, with its arguments
``dockyard approvals approve ID [--note N]`` / ``deny ID [--note N]``  decide a pending call
``dockyard audit verify``      check the audit log's hash chain (exit 1 naming the first broken record)
``dockyard audit tail [-n N] [--follow]``  the latest audit records
``dockyard audit search [--principal P] [--tool GLOB] [--status S] [--since T] [--until T] [--limit N]``
``dockyard audit export [--since T] [--until T]``  every record as JSONL on stdout
``dockyard secrets set S --header N | --env N``  store an upstream secret, encrypted (value from a prompt or stdin)
``dockyard secrets list [S]`` / ``delete S ...``  names of stored secrets and OAuth grants; delete one
``dockyard users add NAME [--group G]`` / ``list`` / ``disable NAME``  local accounts (password from a prompt or stdin)
``dockyard token create --subject S --scope SC [--ttl 30d]`` / ``list`` / ``revoke GRANT``  tokens for scripts
``dockyard servers authorize S``  the consent link that lets the portal list an ``auth = "oauth"`` server

Exit status: 0 on success, 1 when a check or test found problems, 2 on an error (bad config, bad input).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from portal.config import Settings, load_settings
from portal.errors import DockyardError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from portal.approvals import Approval
    from portal.policy import PolicyEngine
    from portal.store import AuditRecord

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


@contextmanager
def _database(url: str) -> Generator[Engine]:
    """The portal's database, migrated, disposed of on the way out."""
    from portal.store import open_engine

    engine = open_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal.app import create_app

    settings = _settings(args).with_overrides(host=args.host, port=args.port)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one line per upstream request otherwise
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    app = create_app(settings)
    print(f"dockyard: serving {settings.portal.public_url}/mcp (config: {settings.source})", file=sys.stderr)
    uvicorn.run(
        app,
        host=settings.portal.bind_host,
        port=settings.portal.bind_port,
        log_level=args.log_level,
        lifespan="on",
        access_log=False,  # every request through the choke point is in the audit log
        timeout_graceful_shutdown=5,
    )
    return 0


def _servers(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from portal.store import UpstreamStatus

    settings = _settings(args)
    with _database(settings.database_url) as engine, Session(engine) as session:
        rows = {r.server: r for r in session.exec(select(UpstreamStatus)).all()}
    header = f"{'SERVER':<20} {'KIND':<9} {'STATE':<10} {'TOOLS':>5} {'HELD':>4}  LAST ERROR"
    print(header)
    for name, server in sorted(settings.servers.items()):
        row = rows.get(name)
        state = "disabled" if not server.enabled else (row.state if row else "never-run")
        tools = str(row.tools) if row else "-"
        held = str(row.withheld) if row else "-"
        error = (row.last_error or "") if row else ""
        print(f"{name:<20} {server.kind:<9} {state:<10} {tools:>5} {held:>4}  {error[:100]}")
    from portal.auth._secrets_cli import grant_problems

    for problem in grant_problems(settings):
        print(f"warning: {problem}")
    return 0


def _servers_import(args: argparse.Namespace) -> int:
    from portal.importer import import_servers

    config = _config_path(args.config) or _DEFAULT_CONFIG
    names = import_servers(Path(args.file), config)  # validates the whole new file before replacing it
    print(f"imported {len(names)} server(s) into {config}: {', '.join(names)}")
    return 0


def _tools_pending(args: argparse.Namespace) -> int:
    from portal.pins import PinStore

    settings = _settings(args)
    with _database(settings.database_url) as engine:
        pending = PinStore(engine).pending(args.server)
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

    settings = _settings(args)
    if args.server not in settings.servers:
        raise DockyardError(f"no server {args.server!r} in {settings.source}")
    with _database(settings.database_url) as engine:
        accepted = PinStore(engine).accept(args.server, args.tool)
    if not accepted:
        what = f"tool {args.tool!r} of " if args.tool else ""
        print(f"nothing to accept: {what}server {args.server!r} has no withheld definition")
        return 1
    print(f"accepted {len(accepted)} definition(s) of {args.server}: {', '.join(accepted)}")
    return 0


def _policy_dir(args: argparse.Namespace) -> Path:
    """``DIR`` if given, else ``[policy] dir`` of the config (default: the shipped ``policies/``)."""
    if args.dir:
        return Path(args.dir)
    from portal.config import SHIPPED_POLICIES

    return _settings(args).policy.dir or SHIPPED_POLICIES


def _load_policy(directory: Path) -> PolicyEngine | None:
    """The policy in ``directory``, or None after printing each problem (``file:line: reason``)."""
    from portal.policy import PolicyLoadError, load_policy

    try:
        return load_policy(directory)
    except PolicyLoadError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        count = len(error.problems)
        print(f"dockyard: {count} problem{'s' if count > 1 else ''} in {directory}", file=sys.stderr)
        return None


def _policy_check(args: argparse.Namespace) -> int:
    directory = _policy_dir(args)
    engine = _load_policy(directory)
    if engine is None:
        return 1
    print(
        f"{directory}: ok (version {engine.version}: {len(engine.files)} file(s), {len(engine.rules)} rule(s), "
        f"{len(engine.roles)} role(s), {len(engine.cases)} test case(s))"
    )
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from portal.policy import run_cases

    directory = _policy_dir(args)
    engine = _load_policy(directory)
    if engine is None:
        return 1
    results = run_cases(engine)
    for result in results:
        if not result.passed or not args.quiet:
            print(result.render())
    failed = sum(1 for r in results if not r.passed)
    print(f"{len(results) - failed} passed, {failed} failed ({directory}, version {engine.version})")
    return 1 if failed else 0


def _json_object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DockyardError(f"{what} is not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise DockyardError(f'{what} must be a JSON object such as \'{{"path": "/tmp"}}\', got {text!r}')
    return cast(dict[str, Any], value)


def _policy_explain(args: argparse.Namespace) -> int:
    import mcp_types as types
    from pydantic import ValidationError

    from portal.policy import parse_principal
    from portal.policy_seam import Request

    principal = parse_principal(args.as_, groups=frozenset(args.group), client_id=args.client)
    server = args.server or args.tool.partition("__")[0]
    if not args.server and "__" not in args.tool:
        raise DockyardError(f"{args.tool!r} has no SERVER__ prefix; give its server with --server")
    hints = _json_object(args.annotations, "--annotations")
    try:
        annotations = None if hints is None else types.ToolAnnotations.model_validate(hints, strict=True)
    except ValidationError as error:
        raise DockyardError(f"--annotations: {error.errors()[0]['msg']} (e.g. '{{\"readOnlyHint\": true}}')") from None
    try:
        now = None if args.at is None else datetime.fromisoformat(args.at)
    except ValueError:
        raise DockyardError(f"--at must be an ISO 8601 time such as 2026-03-02T09:30:00Z, got {args.at!r}") from None
    if now is not None and now.tzinfo is None:
        raise DockyardError(f"--at needs an offset ('Z' or '+01:00'), got {args.at!r}")
    arguments = _json_object(args.arguments, "ARGS")
    engine = _load_policy(_policy_dir(args))
    if engine is None:
        return 1
    request = Request(args.method, args.tool, server, arguments, annotations)
    print(engine.explain(principal, request, now=now).render())
    return 0


def _policy_schema(args: argparse.Namespace) -> int:
    from portal.policy import policy_schema

    print(json.dumps(policy_schema(), indent=2))
    return 0


def _add_policy_commands(policy: argparse.ArgumentParser) -> None:
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    where = "policy directory (default: [policy] dir of the config, else Dockyard's policies/)"
    check = policy_sub.add_parser("check", help="validate the policy files; problems name file and line")
    check.add_argument("dir", nargs="?", help=where)
    check.set_defaults(func=_policy_check)
    test = policy_sub.add_parser("test", help="run the test cases the policy files carry")
    test.add_argument("dir", nargs="?", help=where)
    test.add_argument("--quiet", "-q", action="store_true", help="print only failures and the summary")
    test.set_defaults(func=_policy_test)
    explain = policy_sub.add_parser("explain", help="the decision for one call and the rules that made it")
    explain.add_argument(
        "--as", dest="as_", required=True, metavar="PRINCIPAL", help="local, user:NAME or service:NAME"
    )
    explain.add_argument("--group", action="append", default=[], metavar="GROUP", help="a group of the caller (repeat)")
    explain.add_argument("--client", metavar="CLIENT_ID", help="the OAuth client the call comes through")
    explain.add_argument("--server", help="the tool's server (default: the part of TOOL before '__')")
    explain.add_argument("--annotations", metavar="JSON", help="hints the tool declares: '{\"destructiveHint\": true}'")
    explain.add_argument(
        "--method",
        default="tools/call",
        choices=["tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete", "list"],
        help="the request (default: tools/call; 'list' asks whether TOOL is listed)",
    )
    explain.add_argument("--at", metavar="TIME", help="time of the call, ISO 8601 (default: now)")
    explain.add_argument("--dir", help=where)
    explain.add_argument("tool", metavar="TOOL", help="the name clients see, e.g. github__create_issue")
    explain.add_argument("arguments", metavar="ARGS", nargs="?", help="the call's arguments as a JSON object")
    explain.set_defaults(func=_policy_explain)
    schema = policy_sub.add_parser("schema", help="print the JSON Schema of policy files (for editors)")
    schema.set_defaults(func=_policy_schema)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DockyardError(f"{option} must be an ISO 8601 time such as 2026-03-02T09:30:00Z, got {value!r}") from None
    if parsed.tzinfo is None:
        raise DockyardError(f"{option} needs an offset ('Z' or '+01:00'), got {value!r}")
    return parsed


def _audit_line(record: AuditRecord) -> str:
    client = f" via {record.client}" if record.client else ""
    error = f"  {record.error[:120]}" if record.error else ""
    return (
        f"{record.id} {record.at:%Y-%m-%dT%H:%M:%S}Z {record.principal}{client} {record.method} {record.target} "
        f"{record.decision} {record.status} {record.latency_ms:.1f}ms{error}"
    )


def _audit_verify(args: argparse.Namespace) -> int:
    from portal.audit import verify

    with _database(_settings(args).database_url) as engine:
        report = verify(engine)
    print(report.render())
    return 1 if report.broken else 0


def _audit_tail(args: argparse.Namespace) -> int:
    import time

    from portal.audit import query

    if args.n < 0:
        raise DockyardError(f"-n must be 0 or more, got {args.n}")
    with _database(_settings(args).database_url) as engine:
        records = query(engine, limit=args.n, newest=True) if args.n else []
        for record in records:
            print(_audit_line(record), flush=True)
        if not args.follow:
            return 0
        last = records[-1].id if records else max((r.id or 0 for r in query(engine, limit=1, newest=True)), default=0)
        while True:
            for record in query(engine, after_id=last, limit=1000):
                print(_audit_line(record), flush=True)
                last = record.id
            time.sleep(args.interval)  # a CLI poll: the portal writes in batches anyway


def _audit_search(args: argparse.Namespace) -> int:
    from portal.audit import query

    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    with _database(_settings(args).database_url) as engine:
        records = query(
            engine,
            principal=args.principal,
            tool=args.tool,
            status=args.status,
            since=since,
            until=until,
            limit=args.limit,
            newest=True,
        )
    for record in records:
        print(_audit_line(record))
    if not records:
        print("no matching audit records", file=sys.stderr)
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    from portal.audit import export_line, query

    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    with _database(_settings(args).database_url) as engine:
        last: int | None = None
        while batch := query(engine, since=since, until=until, after_id=last, limit=5000):
            sys.stdout.writelines(export_line(record) + "\n" for record in batch)
            last = batch[-1].id
    return 0


def _approval_line(approval: Approval) -> str:
    decided = f" by {approval.decided_by}" if approval.decided_by else ""
    return (
        f"{approval.id}  {approval.status:<8} {approval.principal:<20} {approval.target}  "
        f"rule={approval.rule} expires={approval.expires_at:%Y-%m-%d %H:%M}{decided}"
    )


def _approvals_list(args: argparse.Namespace) -> int:
    from portal.approvals import ApprovalStore

    with _database(_settings(args).database_url) as engine:
        approvals = ApprovalStore(engine).list(status=None if args.all else args.status, limit=args.limit)
    if args.json:
        for approval in approvals:
            print(json.dumps(approval.as_json(), ensure_ascii=False))
        return 0
    for approval in approvals:
        print(_approval_line(approval))
    if not approvals:
        print(f"no {'' if args.all else args.status + ' '}approvals", file=sys.stderr)
    return 0


def _approvals_show(args: argparse.Namespace) -> int:
    from portal.approvals import ApprovalStore

    with _database(_settings(args).database_url) as engine:
        approval = ApprovalStore(engine).get(args.id)
    print(json.dumps(approval.as_json(), indent=2, ensure_ascii=False))
    return 0


def _approvals_decide(args: argparse.Namespace) -> int:
    import getpass

    from portal.approvals import ApprovalStore

    by = f"cli:{getpass.getuser()}"
    with _database(_settings(args).database_url) as engine:
        approval = ApprovalStore(engine).decide(args.id, approve=args.approve, by=by, note=args.note)
    print(_approval_line(approval))
    if approval.status == "approved":
        print("the caller's next identical call runs it, once", file=sys.stderr)
    return 0


def _add_approvals_commands(approvals: argparse.ArgumentParser) -> None:
    sub = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = sub.add_parser("list", help="held calls, newest first (pending ones by default)")
    listing.add_argument(
        "--status", default="pending", choices=["pending", "approved", "denied", "consumed", "expired"]
    )
    listing.add_argument("--all", action="store_true", help="every status")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default: 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, with the arguments")
    listing.set_defaults(func=_approvals_list)
    show = sub.add_parser("show", help="one held call as JSON, with its arguments")
    show.add_argument("id")
    show.set_defaults(func=_approvals_show)
    for name, approve in (("approve", True), ("deny", False)):
        decide = sub.add_parser(name, help=f"{name} a pending call")
        decide.add_argument("id")
        decide.add_argument("--note", help="why; the caller sees it")
        decide.set_defaults(func=_approvals_decide, approve=approve)


def _add_audit_commands(audit: argparse.ArgumentParser) -> None:
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 naming the first broken record")
    verify.set_defaults(func=_audit_verify)
    tail = audit_sub.add_parser("tail", help="the latest records, oldest first")
    tail.add_argument("-n", type=int, default=20, help="how many records (default: 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records until interrupted")
    tail.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    tail.set_defaults(func=_audit_tail)
    search = audit_sub.add_parser("search", help="records matching every filter given (the newest --limit)")
    search.add_argument("--principal", help="exact principal: local, user:NAME or service:NAME")
    search.add_argument("--tool", metavar="GLOB", help="target name pattern, e.g. 'github__*'")
    search.add_argument("--status", help="ok, error, denied, unavailable, withheld, unknown or cancelled")
    search.add_argument("--since", metavar="TIME", help="at or after this ISO 8601 time")
    search.add_argument("--until", metavar="TIME", help="before this ISO 8601 time")
    search.add_argument("--limit", type=int, default=100, help="at most this many records (default: 100)")
    search.set_defaults(func=_audit_search)
    export = audit_sub.add_parser("export", help="records as JSONL on stdout, one per line, with their hashes")
    export.add_argument("--since", metavar="TIME", help="at or after this ISO 8601 time")
    export.add_argument("--until", metavar="TIME", help="before this ISO 8601 time")
    export.set_defaults(func=_audit_export)


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
    from portal.auth._secrets_cli import add_secrets_commands, add_servers_authorize

    add_servers_authorize(servers_sub, _settings)

    tools = commands.add_parser("tools", help="review tool definitions that changed upstream")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True)
    pending = tools_sub.add_parser("pending", help="list withheld tools")
    pending.add_argument("server", nargs="?")
    pending.set_defaults(func=_tools_pending)
    accept = tools_sub.add_parser("accept", help="approve changed definitions")
    accept.add_argument("server")
    accept.add_argument("tool", nargs="?")
    accept.set_defaults(func=_tools_accept)

    _add_policy_commands(commands.add_parser("policy", help="check, test and explain the scope policies"))
    _add_approvals_commands(commands.add_parser("approvals", help="list, approve and deny calls held for approval"))
    _add_audit_commands(commands.add_parser("audit", help="verify, tail, search and export the audit log"))
    add_secrets_commands(commands.add_parser("secrets", help="upstream secrets in the encrypted vault"), _settings)
    from portal.auth._cli import add_token_commands, add_users_commands

    add_users_commands(commands.add_parser("users", help="local user accounts: add, list, disable"), _settings)
    add_token_commands(commands.add_parser("token", help="access tokens for scripts: create, list, revoke"), _settings)
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
