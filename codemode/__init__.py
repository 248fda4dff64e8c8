"""Code Mode: a typed Python SDK generated from the tools a principal may see.

Today this package generates the SDK (:func:`generate_sdk`) and loads it with a call hook
(:func:`load_sdk`); the ``/mcp/code`` tools and the executors build on it.
"""

from codemode._sdk import (
    GeneratedSdk,
    SdkFunction,
    SdkParameter,
    ToolCaller,
    default_target,
    generate_sdk,
    load_sdk,
)

__all__ = [
    "GeneratedSdk",
    "SdkFunction",
    "SdkParameter",
    "ToolCaller",
    "default_target",
    "generate_sdk",
    "load_sdk",
]
