"""``stellarscope serve``: the server never outlives the command, a busy port or a broken store
is reported before anything claims to serve, and ``--model`` directories are checked and
handed to the app.

The first test starts a real server (``panel serve`` in a child process), which takes a
while on a loaded machine; the others stop before a server would start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from core.cli import serve as serve_cli
from core.cli.main import main
from core.mock import generate_mock_survey

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "store"
    generate_mock_survey(path, n_stars=40, seed=3, progress=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def descendants(pid: int) -> list[int]:
    """Processes whose parent chain leads to ``pid`` (from /proc)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def serve_env(tmp_path) -> dict:
    return dict(os.environ, STELLARSCOPE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")


def serve_process(args, tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.cli.main", "serve", *args], cwd=REPO,
                            env=serve_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def check_first_page(port: int) -> None:
    """The served page loads BokehJS from this server, without the WebGL and MathJax bundles
    the app never uses (2 MB of script a new page would parse before its spectrum)."""
    from dashboard.page_resources import UNUSED_BUNDLES

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=START_TIMEOUT_S) as r:
        assert r.status == 200
        page = r.read().decode()
    scripts = re.findall(r'<script[^>]* src="([^"]+)"', page)
    assert any("static/js/bokeh.min.js" in s for s in scripts), scripts
    assert not [s for s in scripts for b in UNUSED_BUNDLES if f"/{b}." in s], scripts
    assert not [s for s in scripts if "://" in s], "a script from another host"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
def test_sigterm_stops_the_server_and_frees_the_port(store, tmp_path):
    port = free_port()
    proc = serve_process(["--store", str(store), "--port", str(port)], tmp_path)
    lines: list[str] = []
    up = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "Stellarscope: serving" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not up.is_set() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.is_set(), "server did not come up:\n" + "".join(lines[-40:])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it answers
        check_first_page(port)
        children = descendants(proc.pid)
        assert children, "the server runs in a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_is_free(port), "the port is still taken after serve was stopped"
        assert not [c for c in children if alive(c)], "a child of serve outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in descendants(proc.pid):
            os.kill(c, signal.SIGKILL)


def test_busy_port_is_reported_before_serving(store, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        proc = serve_process(["--store", str(store), "--port", str(port)], tmp_path)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert f"port {port}" in out and "already in use" in out
    assert "serving" not in out and "starting" not in out  # nothing was started or claimed
    assert time.monotonic() - t0 < 120


def test_broken_stores_are_refused_with_the_reason(store, tmp_path, capsys):
    port = str(free_port())
    no_catalog = tmp_path / "no-catalog"
    shutil.copytree(store, no_catalog)
    (no_catalog / "catalog.parquet").unlink()
    assert main(["serve", "--store", str(no_catalog), "--port", port]) == 1
    err = capsys.readouterr().err
    assert "cannot serve this store" in err and "catalog" in err and str(no_catalog) in err

    no_part = tmp_path / "no-part"
    shutil.copytree(store, no_part)
    next(no_part.glob("spectra-*.h5")).unlink()
    assert main(["serve", "--store", str(no_part), "--port", port]) == 1
    err = capsys.readouterr().err
    assert "cannot serve this store" in err and "spectra-0000.h5" in err

    assert main(["serve", "--store", str(tmp_path / "nowhere"), "--port", port]) == 1
    assert "nowhere" in capsys.readouterr().err


class FakeServer:
    """Stands in for subprocess.Popen: records the command and environment, exits at once."""

    seen: list[dict] = []

    def __init__(self, cmd, env=None, **kwargs):
        FakeServer.seen.append({"cmd": cmd, "env": env})
        self.pid, self.returncode = -1, 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


def test_models_are_checked_and_handed_to_the_app(store, tmp_path, monkeypatch, capsys):
    from toy_emulator import random_emulator

    from core.models.emulator import save_emulator
    from core.paths import SHIPPED_MODELS

    emulator = tmp_path / "my-emulator"
    save_emulator(random_emulator(), emulator)
    vae = SHIPPED_MODELS / "vae-demo"
    if not (vae / "config.json").is_file():
        pytest.skip(f"no shipped demo VAE at {vae}")
    monkeypatch.setattr(serve_cli.subprocess, "Popen", FakeServer)
    FakeServer.seen.clear()
    port = str(free_port())
    assert main(["serve", "--store", str(store), "--port", port, "--model", str(emulator),
                 "--vae", str(vae)]) == 0
    env = FakeServer.seen[-1]["env"]
    assert env["STELLARSCOPE_MODELS"].split(os.pathsep) == [str(emulator.resolve()),
                                                            str(vae.resolve())]
    assert env["STELLARSCOPE_STORE"] == str(store)
    assert "serving" not in capsys.readouterr().err  # the fake server never answered

    # refused, naming the directory: unknown family, no model at all, weights that do not load
    odd = tmp_path / "odd"
    shutil.copytree(emulator, odd)
    cfg = (odd / "config.json").read_text().replace('"model_type": "emulator"',
                                                    '"model_type": "tardis"')
    (odd / "config.json").write_text(cfg)
    broken = tmp_path / "broken"
    shutil.copytree(emulator, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    for bad, why in ((odd, "belongs to no known model family"),
                     (tmp_path / "empty", "not a model directory"),
                     (broken, "does not load")):
        bad.mkdir(exist_ok=True)
        FakeServer.seen.clear()
        assert main(["serve", "--store", str(store), "--port", port, "--model", str(bad)]) == 1
        err = capsys.readouterr().err
        assert str(bad) in err and why in err
        assert not FakeServer.seen  # nothing started
