"""One long job at a time for a view: a worker thread (inline when ``sync``), a progress bar
and a status line that the worker may update through the page's document."""

from __future__ import annotations

import html

import panel as pn

from core.errors import StellarscopeError

from .jobs import JobRunner, event_loop, on_doc, session_doc


class FitJobs:
    """Runs a view's fits; ``set_busy(bool)`` mirrors the state on the view, ``on_idle()``
    re-enables its buttons, ``on_error(exc)`` tells the user."""

    def __init__(self, progress, status, set_busy, on_idle, on_error=None):
        self.progress, self.status = progress, status
        self.set_busy, self.on_idle, self.on_error = set_busy, on_idle, on_error
        self.busy = False
        self._runner = JobRunner()

    def cancel(self, *keys: str) -> None:
        for key in keys:
            self._runner.cancel(key)
        self.busy = False

    def start(self, message: str, buttons) -> None:
        """Busy: every fit button waits, the progress bar shows."""
        self.busy = True
        self.set_busy(True)
        with pn.io.hold():
            for button in buttons:
                button.disabled = True
            self.progress.param.update(value=0, visible=True)
            self.status.object = message

    def done(self) -> None:
        """Not busy (call inside the view's own hold, before it says what came out)."""
        self.busy = False
        self.progress.visible = False
        self.on_idle()

    def run(self, key: str, work, on_done, sync: bool = False) -> None:
        """``work()`` in a worker thread (or here when ``sync``), then ``on_done(result)`` or
        :meth:`failed`."""
        if not sync:
            self._runner.submit(work, key=key, on_done=on_done, on_error=self.failed)
            return
        try:
            result = work()
        except (StellarscopeError, KeyError) as exc:
            self.failed(exc)
            return
        on_done(result)

    def page_progress(self):
        """A ``progress(fraction, message)`` that worker threads may call."""
        doc = session_doc()
        # Scheduled through the server's loop: a worker thread must not touch the document.
        loop = event_loop() if doc is not None else None
        return lambda fraction, message: on_doc(doc, self._set_progress, fraction, message,
                                                loop=loop)

    def _set_progress(self, fraction: float, message: str) -> None:
        if self.busy:
            self.progress.value = int(round(100 * fraction))
            self.status.object = message

    def failed(self, exc: BaseException) -> None:
        with pn.io.hold():
            self.done()
            self.status.object = f"⚠ fit failed: {html.escape(str(exc))}"
        self.set_busy(False)
        if self.on_error is not None:
            self.on_error(exc)
