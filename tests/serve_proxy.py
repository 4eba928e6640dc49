"""A small reverse proxy for tests of ``stellarscope serve`` behind a proxy.

It forwards HTTP and websockets from its own port to a backend, keeping the path (as
JupyterHub's server proxy does with ``absolute_url``) and rewriting ``Host`` to the backend's,
while the browser's ``Origin`` passes unchanged: exactly the case where Bokeh refuses a
websocket (403) unless the proxy's host is among its allowed origins.  Every websocket
handshake's status from the backend is recorded in :attr:`ReverseProxy.ws_status`.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from tornado import httpclient, web, websocket
from tornado.httpserver import HTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length",
               "content-encoding", "proxy-connection", "te", "trailer"}
WS_HEADERS = {"origin", "cookie", "user-agent", "authorization"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _HTTP(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, proxy):
        self.proxy = proxy

    async def _forward(self):
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in HOP_HEADERS}
        headers["Host"] = self.proxy.backend
        method = self.request.method
        body = self.request.body if method in ("POST", "PUT", "PATCH") else None
        req = httpclient.HTTPRequest(f"http://{self.proxy.backend}{self.request.uri}",
                                     method=method, headers=headers, body=body,
                                     follow_redirects=False, request_timeout=120,
                                     decompress_response=True, allow_nonstandard_methods=True)
        resp = await httpclient.AsyncHTTPClient().fetch(req, raise_error=False)
        self.set_status(resp.code, resp.reason)
        self._headers.clear()
        for k, v in resp.headers.get_all():
            if k.lower() in HOP_HEADERS:
                continue
            self.add_header(k, v)
        if resp.body and method != "HEAD":
            self.write(resp.body)

    get = head = post = put = patch = delete = options = _forward


class _WS(websocket.WebSocketHandler):
    def initialize(self, proxy):
        self.proxy = proxy
        self.backend = None
        self.pump = None

    def check_origin(self, origin):  # the backend decides
        return True

    async def get(self, *args, **kwargs):
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() in WS_HEADERS}
        headers["Host"] = self.proxy.backend
        protocols = [p.strip() for p in
                     self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        req = httpclient.HTTPRequest(f"ws://{self.proxy.backend}{self.request.uri}",
                                     headers=headers, request_timeout=60)
        try:
            self.backend = await websocket.websocket_connect(
                req, subprotocols=protocols or None, max_message_size=100 * 2**20)
        except httpclient.HTTPClientError as exc:
            self.proxy.ws_status.append(exc.code)
            self.set_status(exc.code)
            self.finish()
            return
        self.proxy.ws_status.append(101)
        await super().get(*args, **kwargs)

    def select_subprotocol(self, subprotocols):
        return self.backend.selected_subprotocol if self.backend else None

    def open(self, *args, **kwargs):
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self):
        while True:
            msg = await self.backend.read_message()
            if msg is None:
                self.close()
                return
            await self.write_message(msg, binary=isinstance(msg, bytes))

    async def on_message(self, message):
        await self.backend.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        if self.backend is not None:
            self.backend.close()


class ReverseProxy:
    """``with ReverseProxy("127.0.0.1:5006") as proxy: proxy.url`` (its own thread and loop)."""

    def __init__(self, backend: str):
        self.backend = backend
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_status: list[int] = []
        self._loop = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application([(r".*/ws", _WS, {"proxy": self}), (r".*", _HTTP, {"proxy": self})])
        server = HTTPServer(app, max_body_size=100 * 2**20)
        server.listen(self.port, "127.0.0.1")
        self._ready.set()
        loop.run_forever()
        server.stop()
        loop.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
