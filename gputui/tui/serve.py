"""`gputui serve`: the same app in a browser (textual-serve), for people who cannot open a terminal.

Each browser connection runs its own `python -m gputui ...` app process; closing the tab ends that app,
never a run (the scheduler is a separate background process, as in the terminal). Read-only unless
`--writable` is given, and bound to loopback unless `--host` says otherwise.

Loopback is no login: any local user, and any web page the browser opens (cross-site websockets are not
blocked by browsers), could reach the port. So, as Jupyter does, each serve has a secret token, printed in
the URL only to this terminal; a request carrying it (``?token=``) gets it back as an HttpOnly, SameSite=Strict
cookie, and every request without one of the two is refused. The Host header must name this server (DNS
rebinding) and a websocket's Origin must be this server's own page, checked before any app is started; at
most ``--max-sessions`` apps run at once.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import os
import re
import secrets
import shlex
import socket
import sys
from urllib.parse import urlsplit

from gputui.tui.serve_args import TOKEN_ENV, register  # noqa: F401  (register: where it always was)

EXIT_OK, EXIT_USAGE = 0, 2
_WILDCARD = ("0.0.0.0", "::", "")
_TOKEN_OK = re.compile(r"[A-Za-z0-9_.~-]{16,}")


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


def _netlocs(name: str, port: int) -> set[str]:
    """How a Host header or an Origin names NAME:PORT (browsers leave out a default port)."""
    name = f"[{name}]" if ":" in name else name
    return {f"{name}:{port}", name} if port in (80, 443) else {f"{name}:{port}"}


def allowed_hosts(host: str, port: int, url: str) -> frozenset[str]:
    """The Host headers that name this server: its address, its public URL's, and loopback's names when it
    listens there. Anything else, such as a rebinding DNS name that points at this port, is refused."""
    names = set() if host in _WILDCARD else {host}
    if host in _WILDCARD or is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    hosts = set().union(*(_netlocs(n, port) for n in names))
    parts = urlsplit(url)
    if parts.hostname:
        hosts |= _netlocs(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return frozenset(h.lower() for h in hosts)


class Guard:
    """Who may use this server, decided before any handler (so before any app process) runs.

    Every request needs the token, in the query or in the cookie a tokened request set; its Host must name
    this server; a websocket's Origin must be a page of this server's (browsers always send one, and a
    foreign page's websocket is otherwise not stopped by the browser). Tokens are compared in constant time.
    """

    def __init__(self, token: str, host: str, port: int, url: str, max_sessions: int):
        self._token = token.encode()
        self.hosts = allowed_hosts(host, port, url)
        self.cookie = f"gputui-serve-{port}"  # cookies ignore ports: two servers on one host keep their own
        self.cookie_path = urlsplit(url).path.rstrip("/") or "/"
        self.secure = url.startswith("https:")
        self.max_sessions = max_sessions
        self.sessions = 0

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def refusal(self, request) -> str | None:
        """Why REQUEST is refused, or None."""
        host = request.headers.get("Host", "").lower()
        if host not in self.hosts:
            return f"this server does not answer to Host {host or '(none)'!r}; use the URL it printed"
        if not (self._valid(request.query.get("token")) or self._valid(request.cookies.get(self.cookie))):
            return "open the URL with ?token=... that `gputui serve` printed"
        if request.headers.get("Upgrade", "").lower() == "websocket" or request.path.endswith("/ws"):
            origin = urlsplit(request.headers.get("Origin", ""))
            if origin.scheme not in ("http", "https") or origin.netloc.lower() not in self.hosts:
                return "a websocket from another site's page is refused"
        return None

    async def middleware(self, request, handler):
        from aiohttp import web

        reason = self.refusal(request)
        if reason is not None:
            logging.getLogger("gputui.serve").warning(
                "refused %s %s from %s: %s", request.method, request.path, request.remote, reason
            )
            return web.Response(status=403, text=f"gputui serve: forbidden: {reason}\n")
        response = await handler(request)
        if not response.prepared:  # a websocket has been answered already
            response.headers["Referrer-Policy"] = "no-referrer"  # keep ?token= out of other sites' logs
            if self._valid(request.query.get("token")):
                response.set_cookie(
                    self.cookie,
                    self._token.decode(),
                    path=self.cookie_path,
                    httponly=True,
                    samesite="Strict",
                    secure=self.secure or None,
                )
        return response


def guarded_server(command: str, guard: Guard, host: str, port: int, url: str):
    """textual-serve's Server behind GUARD, with at most guard.max_sessions apps running at once."""
    from aiohttp import web
    from textual_serve.server import Server

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()

            @web.middleware
            async def check(request: web.Request, handler) -> web.StreamResponse:
                return await guard.middleware(request, handler)

            app.middlewares.append(check)
            return app

        async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
            if guard.sessions >= guard.max_sessions:
                return web.Response(
                    status=503,
                    text=f"gputui serve: {guard.max_sessions} sessions already open (--max-sessions); "
                    "close a tab and reload\n",
                )
            guard.sessions += 1
            try:
                return await super().handle_websocket(request)
            finally:
                guard.sessions -= 1

    return GuardedServer(command, host=host, port=port, title="gputui", public_url=url)


class _HideToken(logging.Filter):
    """The access log would print each request's ?token=; the token belongs in one printed line only."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = re.sub(r"token=[^&\s\"]*", "token=[hidden]", str(record.msg))
        return True


def serve_token() -> str | None:
    """$GPUTUI_SERVE_TOKEN (taken out of the environment, so no app inherits it), a new secret if unset,
    or None if it is unfit for a URL or too short to be a secret."""
    given = os.environ.pop(TOKEN_ENV, None)
    if given is None:
        return secrets.token_urlsafe(32)
    return given if _TOKEN_OK.fullmatch(given) else None


def _check_target(args) -> None:
    """Refuse a bad job file or run directory now, once, rather than in every browser tab that opens.

    The same checks as the app's own before its first screen; a served app that refuses only shows the
    browser an empty page, its reason going to this server's log.
    """
    from gputui.api import check_app_target

    check_app_target(args.jobs, args.run_dir, args.simulate)


def cmd_serve(args) -> int:
    """Serve the app until Ctrl-C; exit 2 when textual-serve is missing or the port cannot be bound."""
    try:
        import textual_serve.server  # noqa: F401
    except ImportError:
        print(
            "gputui serve: error: the textual-serve package is not installed; "
            "install it with: pip install 'gputui[serve]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    token = serve_token()
    if token is None:
        print(
            f"gputui serve: error: {TOKEN_ENV} must be at least 16 characters of A-Z a-z 0-9 _ . ~ -",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _check_target(args)
    command = app_command(args)
    url = (args.public_url or public_url(args.host, args.port)).rstrip("/")
    mode = "WRITABLE: browsers can launch, pause, kill and retry tasks" if args.writable else "read-only"
    print(f"gputui serve: {url}/?token={token}  ({mode})", flush=True)
    print(
        "gputui serve: the token in that URL is the login; give it only to those who may "
        + ("act on the run" if args.writable else "watch"),
        flush=True,
    )
    if not is_loopback(args.host):
        act = " and act on the run (--writable)" if args.writable else ""
        print(
            f"gputui serve: warning: listening on {args.host}: anyone who can reach this address and has the "
            f"token can watch{act}; plain HTTP carries the token unencrypted.",
            file=sys.stderr,
        )
        if args.host in _WILDCARD and not args.public_url:
            print(f"gputui serve: browsers elsewhere must reach {url}; if not, pass --public-url", file=sys.stderr)
    guard = Guard(token, args.host, args.port, url, args.max_sessions)
    server = guarded_server(command, guard, args.host, args.port, url)
    logging.getLogger("aiohttp.access").addFilter(_HideToken())
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
