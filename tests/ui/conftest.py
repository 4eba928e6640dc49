"""Browser-test fixtures: Debian chromium for pytest-playwright, and a served dashboard.

The dashboard fixture builds a 300-star mock survey and a VAE (the shipped demo weights when
``assets/models/vae-demo`` exists, else a tiny one trained here in a few seconds), then runs
``panel serve dashboard/app.py`` on a free localhost port for the whole session.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
MOCK_STARS = 300
#: Server logs of the served dashboards, by fixture name (for tests that read them).
SERVER_LOGS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian chromium: `make chromium`)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1600, "height": 1000}}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves what its page showed (visible text, also printed with the
    failure, and a screenshot) in test-artifacts/failed-NAME.*: an intermittent failure can be
    read after the run, CI's included."""
    report = yield
    args = getattr(item, "funcargs", {})
    page = next((args[k] for k in ("page", "browser_page") if hasattr(args.get(k), "screenshot")),
                None)
    if report.when == "call" and report.failed and page is not None:
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in item.name)[:80]
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):  # the page may be gone; the report comes first
            text = f"{page.url}\n\n{page.inner_text('body', timeout=5000)}"
            (ARTIFACTS / f"failed-{name}.txt").write_text(text)
            report.sections.append(("page at failure", text[:3000]))  # printed with the failure
            page.screenshot(path=ARTIFACTS / f"failed-{name}.png", full_page=True)
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vae_for(store: Path, root: Path) -> Path:
    from core.paths import SHIPPED_MODELS

    demo = SHIPPED_MODELS / "vae-demo"
    if (demo / "config.json").is_file():
        out = demo
    else:
        import torch

        from core.train.vae import VAETrainSettings, train_vae

        torch.set_num_threads(1)
        out = root / "vae"
        train_vae(VAETrainSettings(store=str(store), out=str(out), epochs=2, batch_size=64,
                                   device="cpu", progress=False, checkpoint_every=100,
                                   stats_rows=300), overwrite=True)
    from core.inference.vae import infer_store

    infer_store(str(store), out, progress=False)
    return out


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the dashboard did not come up in {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve_dashboard(env: dict, log: Path):
    """``panel serve dashboard/app.py`` on a free localhost port with ``env``; yields its URL
    and stops the server afterwards (its output goes to ``log``)."""
    port = _free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "serve", str(REPO / "dashboard" / "app.py"),
             "--port", str(port), "--address", "127.0.0.1", "--warm"],
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=fh,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/app"
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def dashboard_server():
    """:func:`serve_dashboard`, for browser tests that serve their own data."""
    return serve_dashboard


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory):
    """(base URL, the store) of a dashboard served for this test session."""
    from core.mock import generate_mock_survey
    from core.store import SpectraStore

    root = tmp_path_factory.mktemp("ui-dashboard")
    store_path = generate_mock_survey(root / "mock", n_stars=MOCK_STARS, seed=7, progress=False)
    vae = _vae_for(store_path, root)
    env = {"STELLARSCOPE_STORE": str(store_path), "STELLARSCOPE_MODELS": str(vae),
           "STELLARSCOPE_HOME": str(root / "home")}
    log = root / "server.log"
    SERVER_LOGS["dashboard"] = log
    try:
        with serve_dashboard(env, log) as url:
            yield url, SpectraStore.open(store_path)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "ui-server.log").write_text(log.read_text())


@pytest.fixture(scope="session")
def dashboard_log(dashboard) -> Path:
    """The server log of the :func:`dashboard` fixture's server (grows as tests run)."""
    return SERVER_LOGS["dashboard"]
