"""Keyboard shortcuts and stepping through stars (no browser)."""

from __future__ import annotations

import numpy as np
import pytest
from test_dashboard_state import write_store

from dashboard.shortcuts import Shortcuts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("keys") / "store", n=12, seed=2)


@pytest.fixture()
def app(store):
    from dashboard.app import DashboardApp

    return DashboardApp(store_path=store.path)


def test_keys_run_their_actions_and_are_listed():
    calls = []
    keys = Shortcuts({"a": ("say a", lambda: calls.append("a")),
                      "b": ("both", lambda: calls.append("b")),
                      "c": ("both", lambda: calls.append("c"))})
    assert keys.press("a") and keys.press("c") and not keys.press("z")
    assert calls == ["a", "c"]
    keys.listener.param.update(key="b", presses=1)  # what the browser component does
    assert calls == ["a", "c", "b"]
    keys.listener.param.update(key="a", presses=3)  # two quick presses in one update
    assert calls == ["a", "c", "b", "a", "a"]
    assert keys.help_markdown() == "<kbd>a</kbd> say a · <kbd>b</kbd>/<kbd>c</kbd> both"


def test_next_and_previous_walk_the_selection_then_the_catalog(app, store):
    session = app.session
    ids = store.catalog["APOGEE_ID"].to_numpy()
    assert session.step_star(1) and session.focus.star_id == ids[0]  # nothing focused yet
    session.step_star(1)
    assert session.focus.star_id == ids[1]
    session.step_star(-1)
    session.step_star(-1)
    assert session.focus.star_id == ids[-1]  # wraps around
    session.selection.select([3, 7, 9], "box")
    session.step_star(1)  # from the last row: wraps to the first selected
    assert session.focus.star_id == ids[3]
    session.step_star(1)
    assert session.focus.star_id == ids[7]
    session.select_star(int(np.int64(5)))  # a star outside the selection
    session.step_star(-1)
    assert session.focus.star_id == ids[3]


def test_app_keys_switch_tabs_and_step_stars(app, store):
    keys = app.shortcuts
    assert keys.press("3") and app.tabs.active == 2 and app.tab == "catalog"
    assert keys.press("n") and app.session.focus.star_id == store.catalog["APOGEE_ID"].iloc[0]
    assert keys.press("r") and app.session.focus.star_id
    if app.context.slot("emulator").model is not None:
        assert keys.press("f") and app.tabs.active == 3 and app.tab == "fit"
    assert "next star" in keys.help_markdown()


def test_every_registered_view_has_its_key(app):
    from dashboard.views.registry import registered

    for spec in registered():
        assert app.shortcuts.press(spec.key) and app.tab == spec.name
        assert app.tabs.active == list(app.views).index(spec.name)
