"""Work done off a session's thread never touches another session's document.

Bokeh's "current document" is process-wide: while the server's event loop runs a callback of
session B, ``pn.state.curdoc`` in any other thread is B's document.  A corner plot built in a
worker for session A used to hold (``pn.io.hold()``) that document from the worker; when B's
own code held it at the same time, B's release restored the worker's hold and B's document
stayed held for good, so its page never got another change (four concurrent Catalog sessions,
one page without its corner, the server idle, no error).  These tests replay that interleaving
deterministically, without a server or a browser.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.io.doc import patch_curdoc
from bokeh.models import Div
from panel.io.state import state

import dashboard.figures.corner_plot as corner_plot
from dashboard import jobs
from dashboard.figures.corner_plot import CornerPlot

WAIT = 60


class _Session:
    """Stands for a served session's context (what makes ``pn.state.curdoc`` return it)."""


@pytest.fixture
def other():
    """Session B's document, as the server sets it up: a session context, claimed by the
    server's thread (this one), with a model whose changes are recorded as dispatched."""
    doc = Document()
    context = _Session()
    doc._session_context = weakref.ref(context)
    state._thread_id_[doc] = threading.get_ident()
    div = Div(text="start")
    doc.add_root(div)
    sent: list[str] = []
    doc.callbacks.on_change(lambda event: sent.append(getattr(event, "new", None)))
    yield doc, div, sent
    del context


def frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"TEFF": rng.uniform(3500, 6500, n), "LOGG": rng.uniform(0, 5, n)})


@pytest.fixture
def gated(monkeypatch):
    """Aggregation waits for ``go`` once ``entered`` is set: the build is paused inside its
    refresh, where the old code held the current document."""
    entered, go = threading.Event(), threading.Event()
    aggregate = corner_plot.corner.aggregate

    def paused(*args, **kwargs):
        entered.set()
        assert go.wait(WAIT)
        return aggregate(*args, **kwargs)

    monkeypatch.setattr(corner_plot.corner, "aggregate", paused)
    return entered, go


def build() -> CornerPlot:
    noop = lambda *a: None  # noqa: E731
    return CornerPlot(frame(), ["TEFF", "LOGG"], None, "eq_hist", noop, noop, noop)


def test_a_corner_built_off_thread_leaves_another_sessions_document_alone(other, gated):
    doc, div, sent = other
    entered, go = gated
    built: list[CornerPlot] = []
    worker = threading.Thread(target=lambda: built.append(build()), daemon=True)
    with patch_curdoc(doc):  # the server runs a callback of session B meanwhile
        worker.start()
        assert entered.wait(WAIT)
        assert doc.callbacks.hold_value is None  # the worker did not take B's hold
        with pn.io.hold(doc):  # B's own code holds its document meanwhile
            go.set()
            worker.join(WAIT)
            div.text = "during"
    assert built and not worker.is_alive()
    assert doc.callbacks.hold_value is None  # B's document is not left held
    div.text = "after"
    assert "after" in sent  # and B's page still gets its changes


def test_a_jobs_current_document_is_none_of_the_sessions(other):
    """A job sees a detached document as current, whatever the server is serving, so no Panel
    call in it reaches a session's document; its result arrives on the session's document."""
    doc, _, _ = other
    seen, started, go = {}, threading.Event(), threading.Event()

    def job():
        started.set()
        assert go.wait(WAIT)
        seen["curdoc"] = pn.state.curdoc
        seen["session"] = jobs.session_doc()
        return "done"

    results = []
    job_done = threading.Event()
    runner = jobs.JobRunner()
    runner.submit(job, key="k", on_done=lambda r: (results.append(r), job_done.set()))
    assert started.wait(WAIT)
    with patch_curdoc(doc):
        go.set()
        assert job_done.wait(WAIT)
    assert results == ["done"]
    assert seen["curdoc"] is not doc and seen["curdoc"].session_context is None
    assert seen["session"] is None


def test_a_result_is_scheduled_on_the_document_from_the_event_loop():
    """The worker hands its result to the server's loop (thread-safe), which schedules it on
    the session's document from its own thread: the worker never calls into the document."""
    calls: list[tuple[str, int]] = []

    class Doc:
        session_context = object()

        def add_next_tick_callback(self, fn):
            calls.append(("scheduled", threading.get_ident()))
            fn()

    class Loop:
        def __init__(self):
            self.queued = []

        def add_callback(self, fn, *args):
            self.queued.append((fn, args))

    loop, doc = Loop(), Doc()
    ran = []
    worker = threading.Thread(target=lambda: jobs.on_doc(doc, ran.append, 1, loop=loop))
    worker.start()
    worker.join(WAIT)
    assert calls == [] and ran == [] and len(loop.queued) == 1  # nothing touched off-loop
    fn, args = loop.queued[0]
    fn(*args)  # the loop's turn, on its own thread
    assert calls == [("scheduled", threading.get_ident())] and ran == [1]
