"""FastMCP's proxy of one upstream, served over Streamable HTTP on loopback.

Run with the interpreter of ``bench/.venv-fastmcp`` (FastMCP is never installed in the project's venv):
``python bench/_fastmcp_proxy.py UPSTREAM_URL PORT``. It uses ``fastmcp.server.create_proxy`` with its
defaults, as its documentation recommends.
"""

import sys

from fastmcp.server import create_proxy  # pyright: ignore[reportMissingImports]


def main(argv: list[str]) -> None:
    upstream, port = argv[0], int(argv[1])
    proxy = create_proxy(upstream, name="fastmcp-proxy")
    proxy.run(transport="http", host="127.0.0.1", port=port, show_banner=False)


if __name__ == "__main__":
    main(sys.argv[1:])
