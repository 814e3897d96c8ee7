"""`gputui serve`: the same app in a browser (textual-serve), for people who cannot open a terminal.

Each browser connection runs its own `python -m gputui ...` app process; closing the tab ends that app,
never a run (the scheduler is a separate background process, as in the terminal). Read-only unless
`--writable` is given, and bound to loopback unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import shlex
import socket
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2
_WILDCARD = ("0.0.0.0", "::", "")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the CLI's subparsers (kept here so cli.py needs one call)."""
    p = subparsers.add_parser(
        "serve",
        help="serve the app to web browsers (read-only unless --writable; needs the [serve] extra)",
        description="Serve the gputui app over HTTP: each browser tab runs its own app. Read-only unless "
        "--writable; bound to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (default: 8000)")
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
    p.add_argument("--jobs", type=Path, metavar="FILE", help="monitor and launch this job file")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="the run directory to show")
    p.add_argument("--simulate", metavar="SPEC", help="simulated GPUs, as for the app (e.g. 8x24, auto)")
    p.add_argument("--theme", default="dark", choices=["dark", "light", "high-contrast"])
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="app refresh period (min 0.25)")
    p.set_defaults(func=cmd_serve)
    return p


def _port(text: str) -> int:
    """A TCP port a browser can be told about (0, 'any free port', would leave the URL unknown)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {port}")
    return port


def app_command(args) -> str:
    """The shell command each browser connection runs: this interpreter, so the same gputui answers.

    textual-serve runs it through the shell, hence shlex.join; paths are made absolute so the app finds
    them whatever the server's working directory.
    """
    argv = [sys.executable, "-m", "gputui"]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs.resolve())]
    if args.run_dir is not None:
        argv += ["--run-dir", str(args.run_dir.resolve())]
    if args.simulate is not None:
        argv += ["--simulate", args.simulate]
    argv += ["--theme", args.theme, "--interval", str(args.interval)]
    if not args.writable:
        argv.append("--readonly")
    return shlex.join(argv)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach HOST (a name is looked up; one that fails counts as not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def public_url(host: str, port: int) -> str:
    """The address browsers are sent to (the page opens its websocket there, so it must be reachable)."""
    if host in _WILDCARD:
        host = socket.gethostname()  # 0.0.0.0 in the page would point a remote browser at itself
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


def _check_target(args) -> None:
    """Refuse a bad job file or run directory now, once, rather than in every browser tab that opens.

    The same checks as the app's own before its first screen; a served app that refuses only shows the
    browser an empty page, its reason going to this server's log.
    """
    from gputui.engine.session import check_app_target

    check_app_target(args.jobs, args.run_dir, args.simulate)


def cmd_serve(args) -> int:
    """Serve the app until Ctrl-C; exit 2 when textual-serve is missing or the port cannot be bound."""
    try:
        from textual_serve.server import Server
    except ImportError:
        print(
            "gputui serve: error: the textual-serve package is not installed; "
            "install it with: pip install 'gputui[serve]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _check_target(args)
    command = app_command(args)
    url = args.public_url or public_url(args.host, args.port)
    mode = "WRITABLE: browsers can launch, pause, kill and retry tasks" if args.writable else "read-only"
    print(f"gputui serve: {url}  ({mode})", flush=True)
    if not is_loopback(args.host):
        act = " and act on the run (--writable)" if args.writable else ""
        print(
            f"gputui serve: warning: listening on {args.host}: anyone who can reach this address can watch"
            f"{act}; there is no login.",
            file=sys.stderr,
        )
        if args.host in _WILDCARD and not args.public_url:
            print(f"gputui serve: browsers elsewhere must reach {url}; if not, pass --public-url", file=sys.stderr)
    server = Server(command, host=args.host, port=args.port, title="gputui", public_url=url)
    try:
        server.serve()
    except OSError as e:
        if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(
            f"gputui serve: error: cannot listen on {args.host}:{args.port}: {os.strerror(e.errno)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK
