"""Code Mode: a typed Python SDK generated from the tools a principal may see, and the tools over it.

:func:`generate_sdk` generates the SDK and :func:`load_sdk` loads it with a call hook; :class:`SdkIndex`
searches it; :class:`MontyExecutor` runs model-written scripts against it (and :class:`PythonRuntime` runs
them in full CPython in a sandbox box); :func:`build_code_server` is
the ``/mcp/code`` endpoint with its two tools, ``search`` and ``execute``.
"""

from codemode._endpoint import EXECUTE_DESCRIPTION, SEARCH_DESCRIPTION, build_code_server
from codemode._executor import CallRecord, ExecuteResult, Limits, MontyExecutor, ToolError
from codemode._python import PythonRuntime, PythonRuntimeError, python_runtime
from codemode._sdk import (
    GeneratedSdk,
    SdkFunction,
    SdkParameter,
    ToolCaller,
    default_target,
    generate_sdk,
    load_sdk,
)
from codemode._search import Detail, SdkIndex

__all__ = [
    "EXECUTE_DESCRIPTION",
    "SEARCH_DESCRIPTION",
    "CallRecord",
    "Detail",
    "ExecuteResult",
    "GeneratedSdk",
    "Limits",
    "MontyExecutor",
    "PythonRuntime",
    "PythonRuntimeError",
    "SdkFunction",
    "SdkIndex",
    "SdkParameter",
    "ToolCaller",
    "ToolError",
    "build_code_server",
    "default_target",
    "generate_sdk",
    "load_sdk",
    "python_runtime",
]
