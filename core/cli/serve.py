"""``stellarscope serve``: run the dashboard (``panel serve dashboard/app.py``) on localhost.

For remote and group use: ``--prefix`` serves under a path of a reverse proxy (JupyterHub's
server proxy, nginx …), ``--allow-origin`` adds the proxy's host to the websocket origins
Bokeh accepts, and ``--basic-auth``/``--basic-auth-env`` or the ``--oauth-*`` options (passed
through to Panel) ask for a login.  Passwords and secrets never go on a command line: the
basic-auth password travels to the server in its environment and is set from there
(:func:`launch`); Panel's own ``PANEL_OAUTH_SECRET``/``PANEL_COOKIE_SECRET`` are inherited.

The server runs as a child process that never outlives this one: SIGTERM, SIGINT and SIGHUP
are passed on to it, it is stopped when this process exits, and on Linux the kernel stops it
if this process dies without a chance to (``PR_SET_PDEATHSIG``).  Before anything starts the
store, the models and the port are checked, and "Serving at" is printed only once the
server answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 5006
DEFAULT_ADDRESS = "127.0.0.1"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")
#: Signals passed on to the server.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How long the server may take to stop before it is killed.
STOP_GRACE_S = 3.0
#: How long to wait for the server to answer before saying so (it keeps starting).
START_WAIT_S = 180.0
#: The basic-auth password (or JSON {user: password}) on its way to the server process.
AUTH_ENV = "_STELLARSCOPE_BASIC_AUTH"
#: ``--oauth-*`` options passed through to ``panel serve`` unchanged (not the secrets: Panel
#: reads those from PANEL_OAUTH_SECRET / PANEL_OAUTH_ENCRYPTION in the environment).
OAUTH_OPTIONS = ("provider", "key", "redirect_uri", "extra_params", "jwt_user", "expiry_days")
#: OAuth providers that need no client secret.
NO_SECRET_PROVIDERS = ("pam",)


def register(sub, groups) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the dashboard in your browser (localhost by default)",
        description="Serve the Stellarscope dashboard for a store with Panel. Only this "
        "machine can connect unless --address says otherwise. The store, the models and the "
        "port are checked first; stopping this command (Ctrl-C, SIGTERM) stops the server.",
    )
    p.add_argument("--store", default=None,
                   help="store directory or name under $STELLARSCOPE_HOME/stores "
                        "(default: the demo store)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help=f"address to listen on (default {DEFAULT_ADDRESS}, this machine only)")
    p.add_argument("--model", action="append", default=[], metavar="DIR",
                   help="a model directory for the app, of any family (its config.json "
                        "model_type says which); repeat for several. Families not named are "
                        "found as usual ($STELLARSCOPE_HOME/models, then the shipped demos)")
    p.add_argument("--vae", action="append", default=[], metavar="DIR",
                   help="a VAE model directory (the same as --model DIR)")
    remote = p.add_argument_group("remote and group use")
    remote.add_argument("--prefix", default="", metavar="PATH",
                        help="serve under this URL path, as a reverse proxy forwards it "
                             "(e.g. /user/NAME/stellarscope for JupyterHub's server proxy "
                             "with absolute_url true); the page is then PATH/app")
    remote.add_argument("--allow-origin", action="append", default=[], metavar="HOST[:PORT]",
                        help="a host the page may be loaded from (the browser's address of a "
                             "reverse proxy); its websocket is refused (403) otherwise. Repeat "
                             "for several; '*' allows any")
    remote.add_argument("--use-xheaders", action="store_true",
                        help="trust the proxy's X-Forwarded-* headers for client address and "
                             "protocol")
    remote.add_argument("--basic-auth", metavar="FILE", default=None,
                        help="ask for a login: FILE holds the password (its first line; any "
                             "user name) or a JSON object {\"user\": \"password\", ...}")
    remote.add_argument("--basic-auth-env", metavar="VAR", default=None,
                        help="ask for a login with the password in environment variable VAR")
    for name in OAUTH_OPTIONS:
        flag = "--oauth-" + name.replace("_", "-")
        remote.add_argument(flag, dest=f"oauth_{name}", default=None,
                            help=f"passed to `panel serve {flag}`" + (
                                " (e.g. github, google, generic; the client secret in "
                                "$PANEL_OAUTH_SECRET, the cookie key in "
                                "$PANEL_OAUTH_ENCRYPTION)" if name == "provider" else ""))
    p.add_argument("--show", action="store_true", help="open the page in a browser")
    p.add_argument("--dev", action="store_true", help="reload the app when its files change")
    p.set_defaults(func=run)


def app_path() -> Path:
    import dashboard

    return Path(dashboard.__file__).resolve().parent / "app.py"


def normalize_prefix(prefix: str | None) -> str:
    """``/a/b`` from ``a/b/``, ``/a/b/`` …; '' for none."""
    parts = [p for p in (prefix or "").split("/") if p]
    return "/" + "/".join(parts) if parts else ""


def panel_command(port: int, address: str, show: bool = False, dev: bool = False, *,
                  prefix: str = "", origins=(), xheaders: bool = False,
                  oauth: dict | None = None, basic_auth: bool = False) -> list[str]:
    """The ``panel serve`` command line for the dashboard; with ``basic_auth`` it runs
    through :func:`launch`, which sets the password from the environment."""
    runner = ["-m", "core.cli.serve"] if basic_auth else ["-m", "panel"]
    cmd = [sys.executable, *runner, "serve", str(app_path()), "--port", str(port),
           "--address", address, "--warm"]
    allowed = list(dict.fromkeys(origins))
    if address not in LOCAL_ADDRESSES or allowed:
        # naming any origin replaces Bokeh's default (this host and port): keep that one
        local = "localhost" if address in LOCAL_ADDRESSES else address
        allowed = [f"{local}:{port}", *allowed]
        if address in LOCAL_ADDRESSES:
            allowed.append(f"127.0.0.1:{port}")
    for origin in dict.fromkeys(allowed):
        cmd += ["--allow-websocket-origin", origin]
    prefix = normalize_prefix(prefix)
    if prefix:
        cmd += ["--prefix", prefix]
    if xheaders:
        cmd.append("--use-xheaders")
    for name, value in (oauth or {}).items():
        if value is not None:
            cmd += ["--oauth-" + name.replace("_", "-"), str(value)]
    if show:
        cmd.append("--show")
    if dev:
        cmd.append("--dev")
    return cmd


def read_basic_auth(file: str | None = None, env: str | None = None) -> str | dict | None:
    """The basic-auth password (or {user: password}) from ``file`` or environment variable
    ``env``; None when neither is given.  Errors name the file or the variable."""
    from ..errors import BadFileError, StellarscopeError

    if file and env:
        raise StellarscopeError("give --basic-auth or --basic-auth-env, not both")
    if env:
        value = os.environ.get(env, "")
        if not value.strip():
            raise StellarscopeError(f"--basic-auth-env: the environment variable {env} is "
                                    "unset or empty")
        return value.strip("\r\n")
    if not file:
        return None
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFileError(path, f"cannot be read as the basic-auth password ({exc})") from None
    if text.lstrip().startswith("{"):
        try:
            users = json.loads(text)
        except ValueError as exc:
            raise BadFileError(path, f"is not valid JSON ({exc})") from None
        if (not isinstance(users, dict) or not users
                or not all(isinstance(k, str) and isinstance(v, str) and k and v
                           for k, v in users.items())):
            raise BadFileError(path, 'must map user names to passwords: {"user": "password"}')
        return users
    password = text.splitlines()[0].strip("\r\n") if text.strip() else ""
    if not password:
        raise BadFileError(path, "is empty: its first line must be the password")
    return password


def check_oauth(args) -> dict:
    """The ``--oauth-*`` options given; the provider's secret must be in the environment."""
    from ..errors import StellarscopeError

    oauth = {n: getattr(args, f"oauth_{n}", None) for n in OAUTH_OPTIONS}
    oauth = {n: v for n, v in oauth.items() if v is not None}
    if not oauth:
        return {}
    provider = oauth.get("provider")
    if provider is None:
        raise StellarscopeError("--oauth-* options need --oauth-provider")
    if getattr(args, "basic_auth", None) or getattr(args, "basic_auth_env", None):
        raise StellarscopeError("choose one login: --basic-auth or --oauth-provider")
    if provider.lower() not in NO_SECRET_PROVIDERS and not os.environ.get("PANEL_OAUTH_SECRET"):
        raise StellarscopeError(f"--oauth-provider {provider}: set the client secret in the "
                                "environment variable PANEL_OAUTH_SECRET (never on the "
                                "command line)")
    return oauth


def launch(argv: list[str]) -> None:  # pragma: no cover - runs as the server process
    """``panel serve`` with ``argv``, after taking the basic-auth password out of the
    environment (so it is on no command line and the app's sessions never see it)."""
    secret = os.environ.pop(AUTH_ENV, None)
    if secret:
        from panel.config import config

        config.basic_auth = json.loads(secret)
    from panel.command import main

    main(["panel", *argv])


# -- checks before starting ------------------------------------------------------------------


def check_store(arg) -> Path:
    """The store directory, opened and verified; StoreError with the reason otherwise."""
    from ..errors import StellarscopeError, StoreError
    from ..paths import resolve_store
    from ..store import SpectraStore

    path = resolve_store(arg)
    hint = ("build it with `stellarscope demo`" if arg is None
            else "check the path, or build a store with `stellarscope mock` or `ingest`")
    try:
        store = SpectraStore.open(path)
        catalog = getattr(store, "catalog_path", path / "catalog.parquet")
        if not Path(catalog).is_file():
            raise StoreError(f"{path}: the store has no catalog ({Path(catalog).name} is "
                             f"missing)")
    except StoreError as exc:
        raise StoreError(f"cannot serve this store: {exc}; {hint}") from None
    except (StellarscopeError, OSError, ValueError) as exc:
        raise StoreError(f"cannot serve this store: {path}: {exc}; {hint}") from None
    return path


def check_models(dirs: list[str]) -> list[Path]:
    """Each model directory resolved and loaded once: a known family (config.json
    model_type), found by :func:`core.models.find`, weights that load.  Raises
    :class:`~core.errors.StellarscopeError` naming the directory and the problem."""
    if not dirs:
        return []
    from ..errors import BadFileError, StellarscopeError
    from ..models import find, load
    from ..models.families import FAMILIES, family_of
    from ..models.io import read_config

    out: list[Path] = []
    for entry in dirs:
        path = Path(entry).expanduser()
        try:
            kind = read_config(path).get("model_type")
        except (StellarscopeError, OSError, ValueError) as exc:
            raise BadFileError(path, f"not a model directory ({exc})") from None
        family = family_of(str(kind))
        if family is None:
            raise BadFileError(path, f"model_type {kind!r} belongs to no known model family "
                                     f"(known: {', '.join(sorted(FAMILIES))})")
        found = find(family.name, path).resolve()
        try:
            load(found, "cpu")  # broken weights are refused here, not in the app
        except StellarscopeError as exc:
            raise BadFileError(found, f"the {family.title} does not load: {exc}") from None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BadFileError(found, f"the {family.title} does not load ({exc})") from None
        if found not in out:
            out.append(found)
    return out


def check_port(address: str, port: int) -> None:
    """Raise StellarscopeError when ``address:port`` cannot be listened on (in use, or not
    an address of this machine).  SO_REUSEADDR as the server sets it, so a port that only
    has connections closing (TIME_WAIT) counts as free."""
    from ..errors import StellarscopeError

    if not 0 < port < 65536:
        raise StellarscopeError(f"port {port} is not a TCP port (1–65535)")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StellarscopeError(f"cannot listen on {address}: {exc}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(sockaddr)
                s.listen(1)
            except OSError as exc:
                reason = "already in use" if exc.errno in (98, 48, 10048) else exc.strerror
                raise StellarscopeError(
                    f"port {port} on {sockaddr[0]} is {reason}: another server (perhaps "
                    f"another stellarscope serve) is listening there; stop it or pass "
                    f"--port") from None


def _answers(address: str, port: int) -> bool:
    host = "127.0.0.1" if address in ("0.0.0.0", "") else ("::1" if address == "::" else address)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- running the server --------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send the server SIGTERM when this process dies, however it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> int:
    """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


def run(args) -> int:
    store = check_store(args.store)
    models = check_models([*args.model, *args.vae])
    auth = read_basic_auth(getattr(args, "basic_auth", None),
                           getattr(args, "basic_auth_env", None))
    oauth = check_oauth(args)
    check_port(args.address, args.port)
    env = dict(os.environ, STELLARSCOPE_STORE=str(store))
    env.pop("PANEL_BASIC_AUTH", None)  # Panel lower-cases it; ours arrives through AUTH_ENV
    if models:
        env["STELLARSCOPE_MODELS"] = os.pathsep.join(str(m) for m in models)
    if auth is not None:
        env[AUTH_ENV] = json.dumps(auth)
    if (auth is not None or oauth) and not (env.get("PANEL_COOKIE_SECRET")
                                            or env.get("BOKEH_COOKIE_SECRET")):
        # a login cookie must be signed; a fresh key per run logs everyone out on restart
        env["PANEL_COOKIE_SECRET"] = secrets.token_urlsafe(32)
    prefix = normalize_prefix(getattr(args, "prefix", ""))
    host = "localhost" if args.address in LOCAL_ADDRESSES else args.address
    url = f"http://{host}:{args.port}{prefix}/app"
    print(f"Stellarscope: starting the server for {store} on port {args.port} …",
          file=sys.stderr, flush=True)
    received: list[tuple[int, float]] = []
    # its own process group, so a terminal's Ctrl-C reaches it once (through us), not twice
    cmd = panel_command(args.port, args.address, args.show, args.dev, prefix=prefix,
                        origins=getattr(args, "allow_origin", []),
                        xheaders=getattr(args, "use_xheaders", False), oauth=oauth,
                        basic_auth=auth is not None)
    proc = subprocess.Popen(cmd, env=env, process_group=0,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def forward(signum, frame):
        received.append((signum, time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        deadline = time.monotonic() + START_WAIT_S
        while proc.poll() is None and not received and not _answers(args.address, args.port):
            if time.monotonic() > deadline:
                print(f"Stellarscope: the server has not answered on port {args.port} after "
                      f"{START_WAIT_S:.0f} s; still waiting", file=sys.stderr, flush=True)
                deadline = float("inf")
            time.sleep(0.2)
        if proc.poll() is None and not received:
            login = " (login required)" if auth is not None or oauth else ""
            print(f"Stellarscope: serving {store} at {url}{login} (Ctrl-C stops)", file=sys.stderr,
                  flush=True)
        while proc.poll() is None:
            if received and time.monotonic() - received[0][1] > STOP_GRACE_S:
                break  # asked to stop and still running: killed below
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        code = stop(proc, 0 if received else STOP_GRACE_S)
    if received:
        return 128 + int(received[0][0])
    if code:
        print(f"Stellarscope: the server stopped with exit status {code}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover - the server process (see panel_command)
    launch(sys.argv[1:])
