"""Long work off the server's event loop, and throttling of rapid-fire updates.

:class:`JobRunner` runs a function in a worker thread and hands its result back on the
session's document thread (Bokeh models may only change there).  Each ``key`` keeps a
generation counter: a result whose request has been superseded (the user moved on to another
star) is dropped, and the running job's ``cancelled`` event is set so cooperative work can stop.

A job touches no served document.  Bokeh's "current document" is process-wide: in a worker
thread ``pn.state.curdoc`` would be whichever session the server is serving at that instant,
so a job runs with a detached document of its own as current (Panel calls in it, such as
``pn.io.hold()``, act on that), and its result reaches the session through the server's event
loop (Tornado's thread-safe ``add_callback``), which then schedules it on the session's
document from the loop's own thread.

:class:`Throttle` runs a callback at most once per interval, always with the newest arguments,
so a dragged slider never queues up more decodes than the server can draw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """One small pool per process: the machine has few cores and torch uses them itself."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stellarscope-job")
        return _EXECUTOR


def session_doc():
    """The current Bokeh document when called inside a served session, else None."""
    import panel as pn

    doc = pn.state.curdoc
    return doc if doc is not None and doc.session_context is not None else None


def event_loop():
    """The server's event loop when called on it (a served session's thread), else None."""
    import asyncio

    from tornado.ioloop import IOLoop

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return IOLoop.current()


def on_doc(doc, fn: Callable, *args, loop=None) -> None:
    """Call ``fn(*args)`` on ``doc``'s thread (now when there is no served document).

    From another thread pass the server's ``loop`` (:func:`event_loop`, taken on the session's
    thread): the document is then scheduled on from the loop's thread, never from this one."""
    if doc is None:
        fn(*args)
        return
    from panel.io.state import set_curdoc

    def run():
        with set_curdoc(doc):
            fn(*args)

    if loop is None:
        doc.add_next_tick_callback(run)
    else:
        loop.add_callback(doc.add_next_tick_callback, run)


@dataclass
class Job:
    key: str
    generation: int
    status: str = "queued"  # queued | running | finished | error | cancelled
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """Submit work per key; only the newest request of a key delivers its result."""

    def __init__(self):
        self._generation: dict[str, int] = {}
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args, key: str = "default",
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None) -> Job:
        with self._lock:
            gen = self._generation.get(key, 0) + 1
            self._generation[key] = gen
            old = self._running.get(key)
            if old is not None:
                old.cancelled.set()
            job = self._running[key] = Job(key, gen)
        doc = session_doc()
        loop = event_loop() if doc is not None else None
        executor().submit(self._run, job, fn, args, doc, loop, on_done, on_error)
        return job

    def is_current(self, job: Job) -> bool:
        return self._generation.get(job.key) == job.generation and not job.cancelled.is_set()

    def cancel(self, key: str) -> None:
        with self._lock:
            self._generation[key] = self._generation.get(key, 0) + 1
            job = self._running.pop(key, None)
        if job is not None:
            job.cancelled.set()
            job.status = "cancelled"

    def _run(self, job, fn, args, doc, loop, on_done, on_error) -> None:
        from bokeh.document import Document
        from panel.io.state import set_curdoc

        job.status = "running"
        try:
            with set_curdoc(Document()):  # detached: see the module's docstring
                result = fn(*args)
        except BaseException as exc:  # handed to the UI as a message, never a traceback
            job.status, job.error = "error", exc
            if self.is_current(job) and on_error is not None:
                on_doc(doc, on_error, exc, loop=loop)
            return
        finally:
            with self._lock:
                if self._running.get(job.key) is job:
                    del self._running[job.key]
        if not self.is_current(job):
            job.status = "cancelled"
            return
        job.status = "finished"
        if on_done is not None:
            on_doc(doc, on_done, result, loop=loop)


class Throttle:
    """Call ``fn`` at most once per ``interval`` seconds with the newest arguments.

    The first call of a burst runs at once; later calls inside the interval are folded into
    one trailing call.  Outside a served session every call runs at once.
    """

    def __init__(self, fn: Callable[..., Any], interval: float = 0.04):
        self.fn = fn
        self.interval = float(interval)
        self._last = 0.0
        self._pending: tuple | None = None
        self._scheduled = False

    def __call__(self, *args) -> None:
        self._pending = args
        if self._scheduled:
            return
        wait = self._last + self.interval - time.monotonic()
        doc = session_doc()
        if wait <= 0 or doc is None:
            self._flush()
            return
        self._scheduled = True
        from panel.io.state import set_curdoc

        def later():
            self._scheduled = False
            with set_curdoc(doc):
                self._flush()

        doc.add_timeout_callback(later, int(wait * 1000) + 1)

    def _flush(self) -> None:
        args, self._pending = self._pending, None
        if args is None:
            return
        self._last = time.monotonic()
        self.fn(*args)


class Debounce:
    """Call ``fn`` once calls have stopped for ``delay`` seconds, with the newest arguments.

    For costly follow-ups (the sensitivity strip) that should not run on every key press.
    Outside a served session every call runs at once.
    """

    def __init__(self, fn: Callable[..., Any], delay: float = 0.3):
        self.fn = fn
        self.delay = float(delay)
        self._handle = None
        self._doc = None
        self._args: tuple = ()

    def __call__(self, *args) -> None:
        doc = session_doc()
        if doc is None or self.delay <= 0:
            self.fn(*args)
            return
        self._args = args
        if self._handle is not None:
            try:
                self._doc.remove_timeout_callback(self._handle)
            except ValueError:  # already ran
                pass
        from panel.io.state import set_curdoc

        def later():
            self._handle = None
            with set_curdoc(doc):
                self.fn(*self._args)

        self._doc = doc
        self._handle = doc.add_timeout_callback(later, int(self.delay * 1000))
