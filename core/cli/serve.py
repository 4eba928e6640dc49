"""``stellarscope serve``: run the dashboard (``panel serve dashboard/app.py``) on localhost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFAULT_PORT = 5006
DEFAULT_ADDRESS = "127.0.0.1"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def register(sub, groups) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the dashboard in your browser (localhost by default)",
        description="Serve the Stellarscope dashboard for a store with Panel. Only this "
        "machine can connect unless --address says otherwise.",
    )
    p.add_argument("--store", default=None,
                   help="store directory or name under $STELLARSCOPE_HOME/stores "
                        "(default: the demo store)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help=f"address to listen on (default {DEFAULT_ADDRESS}, this machine only)")
    p.add_argument("--vae", default=None, help="VAE model directory (default: the demo VAE)")
    p.add_argument("--show", action="store_true", help="open the page in a browser")
    p.add_argument("--dev", action="store_true", help="reload the app when its files change")
    p.set_defaults(func=run)


def app_path() -> Path:
    import dashboard

    return Path(dashboard.__file__).resolve().parent / "app.py"


def panel_command(port: int, address: str, show: bool = False, dev: bool = False) -> list[str]:
    """The ``panel serve`` command line for the dashboard."""
    cmd = [sys.executable, "-m", "panel", "serve", str(app_path()), "--port", str(port),
           "--address", address, "--warm"]
    if address not in LOCAL_ADDRESSES:
        cmd += ["--allow-websocket-origin", f"{address}:{port}"]
    if show:
        cmd.append("--show")
    if dev:
        cmd.append("--dev")
    return cmd


def run(args) -> int:
    from ..errors import StoreError
    from ..paths import resolve_store
    from ..store import SpectraStore

    store = resolve_store(args.store)
    try:
        SpectraStore.open(store)
    except StoreError as exc:
        hint = ("build it with `stellarscope demo`" if args.store is None
                else "check the path, or build a store with `stellarscope mock` or `ingest`")
        raise StoreError(f"{exc}; {hint}") from None
    env = dict(os.environ, STELLARSCOPE_STORE=str(store))
    if args.vae:
        env["STELLARSCOPE_VAE"] = str(Path(args.vae).expanduser().resolve())
    host = "localhost" if args.address in LOCAL_ADDRESSES else args.address
    print(f"Stellarscope: serving {store} at http://{host}:{args.port}/app (Ctrl-C stops)",
          file=sys.stderr)
    try:
        return subprocess.call(panel_command(args.port, args.address, args.show, args.dev),
                               env=env)
    except KeyboardInterrupt:
        return 130
