"""``stellarscope serve`` behind a reverse proxy: ``--prefix``, ``--allow-origin`` and a login.

Two real servers (``stellarscope serve`` in child processes) behind the small proxy of
:mod:`serve_proxy`, which keeps the path and rewrites ``Host`` like JupyterHub's server proxy:

* configured (``--prefix``, ``--allow-origin`` the proxy, ``--basic-auth``): without a login the
  page redirects to the login form and the websocket is refused; after logging in through the
  proxy the page and its Bokeh websocket work (the server's first message arrives);
* not configured for the proxy's origin: the page loads but Bokeh refuses its websocket (403).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from serve_proxy import ReverseProxy, free_port
from tornado import httpclient, websocket

from core.cli import serve as serve_cli
from core.errors import StellarscopeError
from core.mock import generate_mock_survey

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/hub/user/ada/stellarscope"
PASSWORD = "Cor-Caroli 12"  # upper case and a space: passed exactly
START_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve-remote") / "store"
    generate_mock_survey(path, n_stars=30, seed=5, progress=False)
    return path


class Server:
    """``stellarscope serve ARGS`` until the context ends; ``.log`` is its output so far."""

    def __init__(self, args: list[str], env: dict):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli.main", "serve", "--port", str(self.port), *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.up = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Stellarscope: serving" in line:
                self.up.set()

    @property
    def log(self) -> str:
        return "".join(self.lines[-40:])

    def __enter__(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.up.is_set() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.up.is_set(), "the server did not come up:\n" + self.log
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def env_for(tmp_path, **extra) -> dict:
    env = dict(os.environ, STELLARSCOPE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    env.pop("PANEL_COOKIE_SECRET", None)
    env.update(extra)
    return env


async def fetch(url: str, *, method="GET", body=None, cookies: dict | None = None):
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())} \
        if cookies else {}
    req = httpclient.HTTPRequest(url, method=method, body=body, headers=headers,
                                 follow_redirects=False, request_timeout=120)
    resp = await httpclient.AsyncHTTPClient().fetch(req, raise_error=False)
    for header in resp.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        if cookies is not None:
            cookies[name.strip()] = rest.split(";", 1)[0]
    return resp


def session_token(page: str) -> str:
    match = re.search(r'"token":\s*"([^"]+)"', page)
    assert match, "no Bokeh session token in the page"
    return match.group(1)


async def open_websocket(proxy: ReverseProxy, token: str, cookies: dict | None = None):
    """The app's Bokeh websocket through the proxy, as the page opens it: the first message
    (the server's ACK) on success, or the HTTP status of the refusal."""
    headers = {"Origin": proxy.url}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    ws_url = proxy.url.replace("http://", "ws://") + f"{PREFIX}/app/ws"
    req = httpclient.HTTPRequest(ws_url, headers=headers, request_timeout=60)
    try:
        conn = await websocket.websocket_connect(req, subprotocols=["bokeh", token])
    except httpclient.HTTPClientError as exc:
        return exc.code
    try:
        return await asyncio.wait_for(conn.read_message(), 60)
    finally:
        conn.close()


def test_behind_a_proxy_with_a_login(store, tmp_path):
    pw = tmp_path / "password.txt"
    pw.write_text(PASSWORD + "\n")
    with ReverseProxy("pending") as proxy:
        origin = urllib.parse.urlsplit(proxy.url).netloc
        with Server(["--store", str(store), "--prefix", PREFIX + "/", "--allow-origin", origin,
                     "--basic-auth", str(pw)], env_for(tmp_path)) as server:
            for p in Path("/proc").iterdir():  # the password is on no command line
                if p.name.isdigit():
                    try:
                        assert PASSWORD.encode() not in (p / "cmdline").read_bytes()
                    except OSError:
                        pass
            proxy.backend = f"127.0.0.1:{server.port}"
            assert f"{PREFIX}/app" in server.log  # the URL printed includes the prefix

            async def scenario():
                app = proxy.url + PREFIX + "/app"
                # no login: redirected to the login form, under the prefix
                resp = await fetch(app)
                assert resp.code == 302, resp.code
                where = urllib.parse.urljoin(app, resp.headers["Location"])
                assert urllib.parse.urlsplit(where).path == PREFIX + "/login", where
                # no login: the websocket is refused
                status = await open_websocket(proxy, "eyJzZXNzaW9uX2lkIjogIngifQ")
                assert status in (401, 403), status
                # a wrong password is refused
                cookies: dict = {}
                login = proxy.url + PREFIX + "/login"
                form = await fetch(where, cookies=cookies)  # as a browser follows it
                assert form.code == 200 and b"password" in form.body
                resp = await fetch(login, method="POST", cookies=cookies,
                                   body="username=ada&password=wrong")
                assert "user" not in cookies and "error" in resp.headers.get("Location", "")
                # the right one logs in; the page and its websocket work through the proxy
                body = urllib.parse.urlencode({"username": "ada", "password": PASSWORD})
                resp = await fetch(login, method="POST", cookies=cookies, body=body)
                assert resp.code == 302 and "user" in cookies, (resp.code, cookies)
                back = urllib.parse.urljoin(login, resp.headers["Location"])
                assert urllib.parse.urlsplit(back).path == PREFIX + "/app", back
                page = await fetch(app, cookies=cookies)
                assert page.code == 200, page.code
                text = page.body.decode()
                assert "static/js/bokeh" in text and "Stellarscope" in text
                first = await open_websocket(proxy, session_token(text), cookies)
                assert isinstance(first, str), f"websocket refused: {first}\n{server.log}"
                assert json.loads(first)["msgtype"] == "ACK"

            asyncio.run(scenario())
    assert 101 in proxy.ws_status


def test_a_proxy_origin_not_allowed_is_refused(store, tmp_path):
    with ReverseProxy("pending") as proxy:
        with Server(["--store", str(store), "--prefix", PREFIX], env_for(tmp_path)) as server:
            proxy.backend = f"127.0.0.1:{server.port}"

            async def scenario():
                page = await fetch(proxy.url + PREFIX + "/app")
                assert page.code == 200, page.code
                return await open_websocket(proxy, session_token(page.body.decode()))

            assert asyncio.run(scenario()) == 403
            assert "Refusing websocket connection" in server.log
    assert proxy.ws_status == [403]


def test_command_line_and_secrets(tmp_path, monkeypatch):
    cmd = serve_cli.panel_command(5010, "127.0.0.1", prefix="a/b/", origins=["hub.example:443"])
    origins = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--allow-websocket-origin"]
    assert origins == ["localhost:5010", "hub.example:443", "127.0.0.1:5010"]
    assert cmd[cmd.index("--prefix") + 1] == "/a/b"
    assert cmd[1:4] == ["-m", "panel", "serve"]
    assert serve_cli.panel_command(5010, "127.0.0.1", basic_auth=True)[1:3] == [
        "-m", "core.cli.serve"]
    oauth = serve_cli.panel_command(5010, "127.0.0.1", oauth={"provider": "github",
                                                              "key": "abc"})
    assert oauth[oauth.index("--oauth-provider") + 1] == "github"
    # basic-auth sources: a password file, a JSON users file, an environment variable
    (tmp_path / "pw").write_text("Secret Word\nignored\n")
    assert serve_cli.read_basic_auth(str(tmp_path / "pw")) == "Secret Word"
    (tmp_path / "users.json").write_text('{"ada": "x1", "bob": "y2"}')
    assert serve_cli.read_basic_auth(str(tmp_path / "users.json")) == {"ada": "x1", "bob": "y2"}
    monkeypatch.setenv("SS_PW", "From Env")
    assert serve_cli.read_basic_auth(env="SS_PW") == "From Env"
    for bad, why in ((tmp_path / "none", "cannot be read"), (tmp_path / "empty", "empty"),
                     (tmp_path / "bad.json", "JSON")):
        if bad.name != "none":
            bad.write_text("" if bad.name == "empty" else "{nope")
        with pytest.raises(StellarscopeError, match=why) as info:
            serve_cli.read_basic_auth(str(bad))
        assert bad.name in str(info.value)
    with pytest.raises(StellarscopeError, match="SS_NOPE"):
        serve_cli.read_basic_auth(env="SS_NOPE")
    monkeypatch.delenv("PANEL_OAUTH_SECRET", raising=False)

    class Args:
        oauth_provider, oauth_key = "github", "abc"
        basic_auth = basic_auth_env = None

    with pytest.raises(StellarscopeError, match="PANEL_OAUTH_SECRET"):
        serve_cli.check_oauth(Args())
    monkeypatch.setenv("PANEL_OAUTH_SECRET", "s")
    assert serve_cli.check_oauth(Args()) == {"provider": "github", "key": "abc"}
