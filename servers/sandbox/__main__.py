"""Run the sandbox server alone over stdio: ``python -m servers.sandbox [--data-dir DIR] [--backend NAME]``.

Its single client is trusted and is the caller ``local``; egress comes from ``--egress`` (repeatable).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from servers.sandbox._server import create_server


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve over stdio until the client hangs up."""
    parser = argparse.ArgumentParser(prog="python -m servers.sandbox", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".dockyard"), help="where sandboxes are kept")
    parser.add_argument("--backend", choices=["bubblewrap", "docker"], default="bubblewrap")
    parser.add_argument("--egress", action="append", default=[], help="an allowed host (repeatable)")
    args = parser.parse_args(argv)
    server = create_server({"backend": args.backend, "egress": args.egress}, data_dir=args.data_dir)
    server.run("stdio")


if __name__ == "__main__":
    main()
