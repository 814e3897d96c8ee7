"""`gputui serve`'s arguments, apart from the server (serve.py): every command line builds its parser, and
the server's modules (sockets, hmac, logging) are imported only to serve."""

from __future__ import annotations

import argparse
from pathlib import Path

TOKEN_ENV = "GPUTUI_SERVE_TOKEN"
MIN_INTERVAL = 0.25  # seconds: the app's fastest refresh


def interval_arg(p: argparse.ArgumentParser) -> None:
    """`--interval S`, the app's refresh period: below the minimum is a usage error, never silently raised."""
    p.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="S",
        help=f"app refresh period in seconds (default 1, min {MIN_INTERVAL:g})",
    )


def _interval(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not s >= MIN_INTERVAL:  # also NaN
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL:g} s, not {text}")
    return s


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "serve",
        help="serve the app to web browsers (read-only unless --writable; needs the [serve] extra)",
        description="Serve the gputui app over HTTP: each browser tab runs its own app. Read-only unless "
        "--writable; bound to 127.0.0.1 unless --host says otherwise. The URL printed at start carries a "
        f"secret token, the only login (set {TOKEN_ENV} in the environment to choose it).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on (default: 8000)")
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL browsers use to reach this server, when it differs from http://HOST:PORT "
        "(behind a proxy or an SSH tunnel, or with --host 0.0.0.0)",
    )
    p.add_argument(
        "--writable",
        action="store_true",
        help="let browsers launch, pause, kill and retry tasks (default: a read-only view)",
    )
    p.add_argument(
        "--max-sessions",
        type=_positive,
        default=8,
        metavar="N",
        help="at most N browser tabs (app processes) at once; more are refused (default: 8)",
    )
    p.add_argument("--jobs", type=Path, metavar="FILE", help="monitor and launch this job file")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="the run directory to show")
    p.add_argument("--simulate", metavar="SPEC", help="simulated GPUs, as for the app (e.g. 8x24, auto)")
    p.add_argument("--theme", default="dark", choices=["dark", "light", "high-contrast"])
    interval_arg(p)
    p.set_defaults(func=_cmd_serve)
    return p


def port_number(text: str, lowest: int = 1) -> int:
    """A TCP port; `lowest` 1 for one a browser is told about (0, 'any free port', would leave the URL unknown)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be {lowest}-65535, not {port}")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _cmd_serve(args) -> int:
    from gputui.tui.serve import cmd_serve

    return cmd_serve(args)
