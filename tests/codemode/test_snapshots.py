# ruff: noqa: E501  (the pinned text is generated code, with its long docstring lines)
"""The generated text of a few real tools, pinned: any change to what a model reads is a deliberate act.

Chosen for what real servers send: a plain filesystem tool with an output schema, a hyphenated
server-everything name, Playwright parameters named ``type`` and ``function`` (and a required key with a
default), Playwright's ``anyOf [enum, null]`` where null clears a setting, and a GitHub tool with a
list of ``anyOf`` objects and integers declared as ``number``. (server-github 2025.4.8 on npm has no
``anyOf [string, null]``; the Playwright tool shows that case.)
"""

from __future__ import annotations

import re

from inline_snapshot import snapshot

from tests.codemode.conftest import LoadedSdk


def method(sdk: LoadedSdk, server: str, tool: str) -> str:
    """The full generated text of one function, body included."""
    name = sdk.sdk.function(server, tool).name
    found = re.search(
        rf"\n(    @staticmethod\n    async def {name}\(.*?)(?=\n\n    @staticmethod|\n\n\nclass |\Z)",
        sdk.sdk.source,
        re.S,
    )
    assert found is not None
    return found.group(1) + "\n"


def definition(sdk: LoadedSdk, name: str) -> str:
    found = re.search(rf"\n(class {name}\(TypedDict\):.*?|{name} = TypedDict\(.*?)(?=\n\n\n)", sdk.sdk.source, re.S)
    assert found is not None
    return found.group(1) + "\n"


def test_filesystem_read_text_file(real_sdk: LoadedSdk) -> None:
    assert method(real_sdk, "filesystem", "read_text_file") == snapshot('''\
    @staticmethod
    async def read_text_file(*, path: str, tail: float | Omit = OMIT, head: float | Omit = OMIT) -> ReadTextFileResult:
        """Read the complete contents of a file from the file system as text. Handles various text encodings and provides detailed error messages if the file cannot be read. Use this tool when you need to examine the contents of a single file. Use the 'head' parameter to read only the first N lines of a file, or the 'tail' parameter to read only the last N lines of a file. Operates on the file as text regardless of extension. Only works within allowed directories.

        Hints: read-only.

        Args:
            tail: If provided, returns only the last N lines of the file
            head: If provided, returns only the first N lines of the file
        """
        return cast(
            "ReadTextFileResult",
            await _call("filesystem__read_text_file", _wire({"path": path, "tail": tail, "head": head})),
        )
''')
    assert definition(real_sdk, "ReadTextFileResult") == snapshot("""\
class ReadTextFileResult(TypedDict):
    content: str
""")


def test_everything_get_sum_with_its_hyphen(real_sdk: LoadedSdk) -> None:
    assert method(real_sdk, "everything", "get-sum") == snapshot('''\
    @staticmethod
    async def get_sum(*, a: float, b: float) -> JSON:
        """Returns the sum of two numbers

        Hints: read-only, idempotent.

        Args:
            a: First number
            b: Second number
        """
        return await _call("everything__get-sum", _wire({"a": a, "b": b}))
''')


def test_playwright_parameters_named_type_and_function(real_sdk: LoadedSdk) -> None:
    assert method(real_sdk, "playwright", "browser_take_screenshot") == snapshot('''\
    @staticmethod
    async def browser_take_screenshot(
        *,
        element: str | Omit = OMIT,
        target: str | Omit = OMIT,
        type: Literal["png", "jpeg", "webp"] | Omit = OMIT,
        filename: str | Omit = OMIT,
        fullPage: bool | Omit = OMIT,
        scale: Literal["css", "device"] = "css",
    ) -> JSON:
        """Take a screenshot of the current page. You can't perform actions based on the screenshot, use browser_snapshot for actions.

        Hints: read-only, open-world.

        Args:
            element: Human-readable element description used to obtain permission to interact with the element
            target: Exact target element reference from the page snapshot, or a unique element selector
            type: Image format for the screenshot. If unset, inferred from the filename extension, otherwise png.
            filename: File name to save the screenshot to. Relative file names are resolved against the workspace root. If not specified, the screenshot is saved into the output directory as `page-{timestamp}.{png|jpeg|webp}`.
            fullPage: When true, takes a screenshot of the full scrollable page, instead of the currently visible viewport. Cannot be used with element screenshots.
            scale: Image resolution scale. "css" produces a screenshot sized in CSS pixels (smaller, consistent across devices). "device" produces a high-resolution screenshot using device pixels (larger, accounts for the device pixel ratio). Default is css. (default: "css")
        """
        return await _call(
            "playwright__browser_take_screenshot",
            _wire({
                "element": element,
                "target": target,
                "type": type,
                "filename": filename,
                "fullPage": fullPage,
                "scale": scale,
            }),
        )
''')
    assert method(real_sdk, "playwright", "browser_evaluate") == snapshot('''\
    @staticmethod
    async def browser_evaluate(
        *,
        element: str | Omit = OMIT,
        target: str | Omit = OMIT,
        function: str,
        filename: str | Omit = OMIT,
    ) -> JSON:
        """Evaluate JavaScript expression on page or element

        Hints: destructive, open-world.

        Args:
            element: Human-readable element description used to obtain permission to interact with the element
            target: Exact target element reference from the page snapshot, or a unique element selector
            function: () => { /* code */ } or (element) => { /* code */ } when element is provided
            filename: File name to save the result to. Relative file names are resolved against the workspace root. If not provided, result is returned as text.
        """
        return await _call(
            "playwright__browser_evaluate",
            _wire({"element": element, "target": target, "function": function, "filename": filename}),
        )
''')


def test_playwright_null_clears_an_override(real_sdk: LoadedSdk) -> None:
    assert method(real_sdk, "playwright", "browser_emulate_media") == snapshot('''\
    @staticmethod
    async def browser_emulate_media(
        *,
        colorScheme: Literal["light", "dark"] | None | Omit = OMIT,
        reducedMotion: Literal["reduce", "no-preference"] | None | Omit = OMIT,
        forcedColors: Literal["active", "none"] | None | Omit = OMIT,
        contrast: Literal["more", "no-preference"] | None | Omit = OMIT,
        media: Literal["screen", "print"] | None | Omit = OMIT,
    ) -> JSON:
        """Emulate CSS media features for the page, for example switch between the light and dark color scheme. Omitted parameters are left unchanged; null clears an override.

        Hints: destructive, open-world.

        Args:
            colorScheme: Emulates the prefers-color-scheme media feature
            reducedMotion: Emulates the prefers-reduced-motion media feature
            forcedColors: Emulates the forced-colors media feature
            contrast: Emulates the prefers-contrast media feature
            media: Changes the CSS media type of the page
        """
        return await _call(
            "playwright__browser_emulate_media",
            _wire({
                "colorScheme": colorScheme,
                "reducedMotion": reducedMotion,
                "forcedColors": forcedColors,
                "contrast": contrast,
                "media": media,
            }),
        )
''')


def test_github_review_comments_are_a_list_of_either_object(real_sdk: LoadedSdk) -> None:
    assert method(real_sdk, "github", "create_pull_request_review") == snapshot('''\
    @staticmethod
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
        return await _call(
            "github__create_pull_request_review",
            _wire({
                "owner": owner,
                "repo": repo,
                "pull_number": pull_number,
                "commit_id": commit_id,
                "body": body,
                "event": event,
                "comments": comments,
            }),
        )
''')
    assert definition(real_sdk, "CreatePullRequestReviewCommentsItemOption1") == snapshot('''\
class CreatePullRequestReviewCommentsItemOption1(TypedDict):
    path: str
    """The relative path to the file being commented on"""
    position: float
    """The position in the diff where you want to add a review comment"""
    body: str
    """Text of the review comment"""
''')


def test_filesystem_media_result_is_a_union_told_apart_by_a_const(real_sdk: LoadedSdk) -> None:
    assert definition(real_sdk, "ReadMediaFileResult") == snapshot("""\
class ReadMediaFileResult(TypedDict):
    content: list[ReadMediaFileResultContentItemOption1 | ReadMediaFileResultContentItemResource]
""")
    assert definition(real_sdk, "ReadMediaFileResultContentItemResource") == snapshot("""\
class ReadMediaFileResultContentItemResource(TypedDict):
    type: Literal["resource"]
    resource: ReadMediaFileResultContentItemResourceResource
""")


def test_the_stub_a_model_reads_has_no_body(real_sdk: LoadedSdk) -> None:
    assert real_sdk.sdk.function("everything", "get-sum").stub == snapshot('''\
@staticmethod
async def get_sum(*, a: float, b: float) -> JSON:
    """Returns the sum of two numbers

    Hints: read-only, idempotent.

    Args:
        a: First number
        b: Second number
    """
    ...\
''')
