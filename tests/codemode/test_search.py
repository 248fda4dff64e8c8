# ruff: noqa: E501  (the pinned text is generated code, with its long lines)
"""Search over the SDK of the four real catalogs: detail levels, exact names, and recall@3 on realistic queries."""

from __future__ import annotations

import mcp_types as types
import pytest
from inline_snapshot import snapshot

from codemode import SdkIndex, generate_sdk

# (query, the tool a model should find: "server.upstream_name") — phrased as a user or a model would ask.
LABELLED: list[tuple[str, str]] = [
    ("add two numbers", "everything.get-sum"),
    ("echo a message back", "everything.echo"),
    ("show the environment variables", "everything.get-env"),
    ("return a tiny image", "everything.get-tiny-image"),
    ("start a long running operation with progress", "everything.trigger-long-running-operation"),
    ("compress a file with gzip", "everything.gzip-file-as-resource"),
    ("read the text of a file", "filesystem.read_text_file"),
    ("write content to a file", "filesystem.write_file"),
    ("make a new folder", "filesystem.create_directory"),
    ("list the contents of a directory", "filesystem.list_directory"),
    ("rename or move a file", "filesystem.move_file"),
    ("find files matching a glob pattern", "filesystem.search_files"),
    ("file size and modification time metadata", "filesystem.get_file_info"),
    ("read several files at once", "filesystem.read_multiple_files"),
    ("recursive tree view of a directory", "filesystem.directory_tree"),
    ("open a pull request", "github.create_pull_request"),
    ("merge a pull request", "github.merge_pull_request"),
    ("comment on an issue", "github.add_issue_comment"),
    ("create a new issue", "github.create_issue"),
    ("fork a repository", "github.fork_repository"),
    ("recent commits on a branch", "github.list_commits"),
    ("search code across repositories", "github.search_code"),
    ("find github users", "github.search_users"),
    ("create a new branch", "github.create_branch"),
    ("files changed in a pull request", "github.get_pull_request_files"),
    ("go to a url in the browser", "playwright.browser_navigate"),
    ("take a screenshot of the page", "playwright.browser_take_screenshot"),
    ("click a button on the page", "playwright.browser_click"),
    ("type text into an input field", "playwright.browser_type"),
    ("press a key on the keyboard", "playwright.browser_press_key"),
    ("accessibility snapshot of the page", "playwright.browser_snapshot"),
    ("wait for text to appear", "playwright.browser_wait_for"),
    ("upload a file in the browser", "playwright.browser_file_upload"),
    ("choose an option in a dropdown", "playwright.browser_select_option"),
    ("console messages of the page", "playwright.browser_console_messages"),
    ("resize the browser window", "playwright.browser_resize"),
]


@pytest.fixture(scope="module")
def index(catalogs: dict[str, list[types.Tool]]) -> SdkIndex:
    return SdkIndex(generate_sdk(catalogs))


def recall_at(index: SdkIndex, k: int) -> tuple[float, list[str]]:
    misses: list[str] = []
    for query, wanted in LABELLED:
        found = [f"{f.server}.{f.tool.name}" for f in index.rank(query, limit=k)]
        if wanted not in found:
            misses.append(f"{query!r}: wanted {wanted}, got {found}")
    return 1 - len(misses) / len(LABELLED), misses


def test_recall_at_3_on_the_labelled_queries_over_the_real_catalogs(index: SdkIndex) -> None:
    recall, misses = recall_at(index, 3)
    print(f"\nrecall@3 = {recall:.3f} over {len(LABELLED)} queries, {len(index.sdk.functions)} functions")
    for miss in misses:
        print("  miss:", miss)
    assert recall >= 0.9, misses


def test_an_exact_name_returns_that_functions_full_stub(index: SdkIndex) -> None:
    for name in ("everything.get_sum", "everything__get-sum", "get-sum"):
        text = index.search(name)
        assert text.startswith("# in namespace everything\nasync def get_sum(*, a: float, b: float) -> JSON:")
        assert "Args:\n        a: First number" in text


def test_detail_levels_go_from_names_to_signatures_to_full_stubs(index: SdkIndex) -> None:
    names = index.search("read a file", detail="names", limit=2)
    assert names.splitlines() == [
        "filesystem.read_file: Read the complete contents of a file as text. DEPRECATED: Use read_text_file instead.",
        names.splitlines()[1],
    ]
    assert names.splitlines()[1].startswith("filesystem.read_text_file: ")
    signatures = index.search("read a file", detail="signatures", limit=1)
    assert signatures.splitlines()[0] == (
        "filesystem.read_file(*, path: str, tail: float | Omit = OMIT, head: float | Omit = OMIT) -> ReadFileResult"
    )
    assert "TypedDict" not in index.search("read a file", detail="signatures", limit=8)
    full = index.search("read a file", detail="full", limit=1)
    assert full.startswith(
        "# types the functions below use\nclass ReadFileResult(TypedDict):\n    content: str\n\n"
        "# in namespace filesystem\nasync def read_file("
    )


def test_the_limit_caps_the_matches_and_nonsense_finds_nothing(index: SdkIndex) -> None:
    assert len(index.search("file", detail="names", limit=4).splitlines()) == 4
    assert index.search("zzzqqq xyzzy") == "No SDK function matches 'zzzqqq xyzzy'; try other words, or fewer."


def test_a_full_stub_comes_with_the_typed_dicts_its_parameters_use(index: SdkIndex) -> None:
    assert index.search("github.create_pull_request_review") == snapshot('''\
# types the functions below use
class CreatePullRequestReviewCommentsItemOption1(TypedDict):
    path: str
    """The relative path to the file being commented on"""
    position: float
    """The position in the diff where you want to add a review comment"""
    body: str
    """Text of the review comment"""

class CreatePullRequestReviewCommentsItemOption2(TypedDict):
    path: str
    """The relative path to the file being commented on"""
    line: float
    """The line number in the file where you want to add a review comment"""
    body: str
    """Text of the review comment"""

# in namespace github
async def create_pull_request_review(
    *,
    owner: str,
    repo: str,
    pull_number: float,
    commit_id: str | Omit = OMIT,
    body: str,
    event: Literal["APPROVE", "REQUEST_CHANGES", "COMMENT"],
    comments: list[CreatePullRequestReviewCommentsItemOption1 | CreatePullRequestReviewCommentsItemOption2] | Omit = OMIT,
) -> JSON:
    """Create a review on a pull request

    Args:
        owner: Repository owner (username or organization)
        repo: Repository name
        pull_number: Pull request number
        commit_id: The SHA of the commit that needs a review
        body: The body text of the review
        event: The review action to perform
        comments: Comments to post as part of the review (specify either position or line, not both)
    """
    ...\
''')


SHARED = {
    "$defs": {
        "State": {"type": "string", "enum": ["open", "closed"], "description": "Whether the issue is open."},
        "Label": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "color": {"type": "string"}},
            "required": ["name"],
        },
        "Issue": {
            "type": "object",
            "properties": {
                "number": {"type": "integer"},
                "labels": {"type": "array", "items": {"$ref": "#/$defs/Label"}},
            },
            "required": ["number", "labels"],
        },
    },
}


def _issue_tool(name: str, description: str, properties: dict[str, object]) -> types.Tool:
    return types.Tool(
        name=name,
        description=description,
        input_schema={"type": "object", "properties": properties, **SHARED},
        output_schema={"$ref": "#/$defs/Issue", **SHARED},
    )


def test_types_shared_by_several_functions_are_written_once_aliases_included() -> None:
    sdk = generate_sdk(
        {
            "tracker": [
                _issue_tool(
                    "create_issue", "Open an issue.", {"labels": {"type": "array", "items": {"$ref": "#/$defs/Label"}}}
                ),
                _issue_tool(
                    "set_state",
                    "Open or close an issue.",
                    {"state": {"$ref": "#/$defs/State"}, "number": {"type": "integer"}},
                ),
            ]
        }
    )
    index = SdkIndex(sdk)
    assert index.search("issue", detail="full", limit=2) == snapshot('''\
# types the functions below use
class Label(TypedDict):
    name: str
    color: NotRequired[str]

class Issue(TypedDict):
    number: int
    labels: list[Label]

State: TypeAlias = Literal["open", "closed"]
"""Whether the issue is open."""

# in namespace tracker
async def create_issue(*, labels: list[Label] | Omit = OMIT) -> Issue:
    """Open an issue."""
    ...

# in namespace tracker
async def set_state(*, state: State | Omit = OMIT, number: int | Omit = OMIT) -> Issue:
    """Open or close an issue."""
    ...\
''')
    assert index.search("issue", detail="signatures", limit=2) == snapshot("""\
tracker.create_issue(*, labels: list[Label] | Omit = OMIT) -> Issue
    # Open an issue.
tracker.set_state(*, state: State | Omit = OMIT, number: int | Omit = OMIT) -> Issue
    # Open or close an issue.\
""")
