"""Browser test: the dashboard behind a reverse proxy under a path prefix, with a login.

``stellarscope serve --prefix … --allow-origin … --basic-auth FILE`` runs behind the small
Host-rewriting proxy of :mod:`serve_proxy` (as JupyterHub's server proxy forwards it); a real
browser logs in through the proxy, the app's page loads and its websocket carries a click (a
random star) both ways.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from playwright.sync_api import expect
from serve_proxy import ReverseProxy, free_port

pytestmark = pytest.mark.ui

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
PREFIX = "/user/ada/stellarscope"
LOAD_MS = 120_000


def test_page_and_websocket_through_a_proxy_with_login(page, tmp_path, artifacts):
    from test_dashboard_state import write_store

    store = write_store(tmp_path / "store", n=20, seed=4)
    secret = tmp_path / "pw"
    secret.write_text("Vega Lyrae\n")
    port = free_port()
    with ReverseProxy(f"127.0.0.1:{port}") as proxy:
        origin = urllib.parse.urlsplit(proxy.url).netloc
        env = dict(os.environ, STELLARSCOPE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli.main", "serve", "--store", str(store.path),
             "--port", str(port), "--prefix", PREFIX, "--allow-origin", origin,
             "--basic-auth", str(secret)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        up = threading.Event()

        def read():
            for line in proc.stdout:
                lines.append(line)
                if "Stellarscope: serving" in line:
                    up.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            deadline = time.monotonic() + 300
            while not up.is_set() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert up.is_set(), "".join(lines[-30:])
            page.goto(proxy.url + PREFIX + "/app", timeout=LOAD_MS)
            page.fill("input[name=username]", "ada")
            page.fill("input[name=password]", "Vega Lyrae")
            page.locator("button[type=submit], input[type=submit]").first.click()
            page.wait_for_selector(".ss-selected-star", timeout=LOAD_MS)
            assert urllib.parse.urlsplit(page.url).path == PREFIX + "/app"
            page.locator(".ss-random-star button").first.click()
            expect(page.locator(".ss-selected-star")).to_contain_text("2M", timeout=LOAD_MS)
            page.screenshot(path=artifacts / "remote-proxy-login.png")
            assert 101 in proxy.ws_status and 403 not in proxy.ws_status
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
