"""Lasso selection in the catalog corner plot: the polygon test and the view's lasso path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from bokeh.models import BoxSelectTool, LassoSelectTool
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dashboard_state import write_store

from dashboard.corner import polygon_mask
from dashboard.state import AppContext, Session
from dashboard.views.catalog import CatalogView

U_SHAPE = ([0, 3, 3, 2, 2, 1, 1, 0], [0, 0, 3, 3, 1, 1, 3, 3])  # a square with a notch on top


def points(x, y) -> pd.DataFrame:
    return pd.DataFrame({"x": np.asarray(x, np.float64), "y": np.asarray(y, np.float64)})


def uniform_points(n: int, lo: float, hi: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return points(rng.uniform(lo, hi, n), rng.uniform(lo, hi, n))


def in_triangle(x, y, tx, ty, margin: float):
    """(inside, clear): strictly inside by the signs of three cross products, and whether the
    point is farther than ``margin`` from every edge's line (where rounding cannot decide)."""
    sides, dist = [], []
    for k in range(3):
        ax, ay, bx, by = tx[k], ty[k], tx[(k + 1) % 3], ty[(k + 1) % 3]
        cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
        sides.append(np.sign(cross))
        dist.append(np.abs(cross) / np.hypot(bx - ax, by - ay))
    inside = (sides[0] == sides[1]) & (sides[1] == sides[2]) & (sides[0] != 0)
    return inside, np.min(dist, axis=0) > margin


# -- polygon_mask -----------------------------------------------------------------------------


def test_square_in_any_orientation_or_starting_vertex():
    frame = uniform_points(4000, -0.5, 1.5, seed=1)
    truth = frame.x.between(0, 1) & frame.y.between(0, 1)
    square = ([0, 1, 1, 0], [0, 0, 1, 1])
    variants = [square, (square[0][::-1], square[1][::-1]),
                (square[0][2:] + square[0][:2], square[1][2:] + square[1][:2]),
                (square[0] + [0], square[1] + [0])]  # closed ring: first vertex repeated
    for xs, ys in variants:
        mask = polygon_mask(frame, "x", "y", xs, ys)
        assert mask.dtype == bool and mask.shape == (4000,)
        np.testing.assert_array_equal(mask, truth.to_numpy())
    assert 0 < truth.sum() < 4000


def test_concave_polygon_leaves_its_notch_out():
    frame = uniform_points(6000, -0.5, 3.5, seed=2)
    x, y = frame.x, frame.y
    notch = (x > 1) & (x < 2) & (y > 1)
    truth = x.between(0, 3) & y.between(0, 3) & ~notch
    np.testing.assert_array_equal(polygon_mask(frame, "x", "y", *U_SHAPE), truth.to_numpy())
    probe = points([0.5, 1.5, 2.5, 1.5], [2.0, 2.0, 2.0, 0.5])
    assert polygon_mask(probe, "x", "y", *U_SHAPE).tolist() == [True, False, True, True]


def test_self_crossing_polygon_uses_the_even_odd_rule():
    angle = np.pi / 2 + np.arange(5) * 4 * np.pi / 5  # a pentagram, drawn in one stroke
    star = (np.cos(angle), np.sin(angle))
    tips = 0.8 * np.cos(np.pi / 2 + np.arange(5) * 2 * np.pi / 5), \
        0.8 * np.sin(np.pi / 2 + np.arange(5) * 2 * np.pi / 5)
    probe = points([0.0, *tips[0], 0.0], [0.0, *tips[1], -0.9])
    mask = polygon_mask(probe, "x", "y", *star)
    # the centre is wound twice: even, so outside; the five tips once; below the star: outside
    assert mask.tolist() == [False, True, True, True, True, True, False]


def test_many_vertices_match_the_circle_they_trace():
    """A hand-drawn lasso has hundreds of vertices spread over many of the sorting strips."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(5000, 400, 20_000).astype(np.float32),
                          "y": rng.normal(2.5, 0.8, 20_000).astype(np.float32)})
    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    xs, ys = 5000 + 500 * np.cos(t), 2.5 + 1.0 * np.sin(t)
    r = np.hypot((frame.x.to_numpy(np.float64) - 5000) / 500, (frame.y.to_numpy(np.float64) - 2.5))
    clear = np.abs(r - 1) > 1e-3  # the polygon's chords lie within 6e-5 of the circle
    mask = polygon_mask(frame, "x", "y", xs, ys)
    np.testing.assert_array_equal(mask[clear], (r < 1)[clear])
    assert 1000 < mask.sum() < 19_000


def test_stars_on_a_shared_edge_belong_to_exactly_one_neighbour():
    ys_edge = np.linspace(0.05, 0.95, 19)
    on_vertical = points(np.ones(19), ys_edge)
    left = polygon_mask(on_vertical, "x", "y", [0, 1, 1, 0], [0, 0, 1, 1])
    right = polygon_mask(on_vertical, "x", "y", [1, 2, 2, 1], [0, 0, 1, 1])
    assert np.all(left ^ right)
    on_horizontal = points(ys_edge, np.ones(19))
    below = polygon_mask(on_horizontal, "x", "y", [0, 1, 1, 0], [0, 0, 1, 1])
    above = polygon_mask(on_horizontal, "x", "y", [0, 1, 1, 0], [1, 1, 2, 2])
    assert np.all(below ^ above)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=6, max_size=6),
       st.integers(0, 2**31 - 1))
def test_triangle_matches_a_brute_force_test(coords, seed):
    tx, ty = np.array(coords[:3]), np.array(coords[3:])
    area = 0.5 * abs((tx[1] - tx[0]) * (ty[2] - ty[0]) - (tx[2] - tx[0]) * (ty[1] - ty[0]))
    frame = uniform_points(500, -60, 60, seed=seed)
    mask = polygon_mask(frame, "x", "y", tx, ty)
    if area < 1e-6:
        assert mask.sum() <= 2  # a flat triangle holds nothing but stars on its line
        return
    inside, clear = in_triangle(frame.x.to_numpy(), frame.y.to_numpy(), tx, ty, 1e-7)
    np.testing.assert_array_equal(mask[clear], inside[clear])


def test_nan_and_infinite_coordinates_are_never_inside():
    nan, inf = np.nan, np.inf
    frame = points([0.5, nan, 0.5, nan, inf, 0.5, -inf, 0.4],
                   [0.5, 0.5, nan, nan, 0.5, -inf, 0.5, 0.6])
    mask = polygon_mask(frame, "x", "y", [0, 1, 1, 0], [0, 0, 1, 1])
    assert mask.tolist() == [True, False, False, False, False, False, False, True]


def test_degenerate_and_bad_polygons():
    frame = uniform_points(100, 0, 1)
    assert not polygon_mask(frame, "x", "y", [0, 1], [0, 1]).any()  # two vertices: no area
    assert not polygon_mask(frame, "x", "y", [0, 1, 0.5], [0.5, 0.5, 0.5]).any()  # flat
    assert not polygon_mask(frame.iloc[:0], "x", "y", [0, 1, 1], [0, 0, 1]).any()
    with pytest.raises(ValueError, match="finite"):
        polygon_mask(frame, "x", "y", [0, 1, np.nan], [0, 0, 1])
    with pytest.raises(ValueError, match="3 x but 2 y"):
        polygon_mask(frame, "x", "y", [0, 1, 1], [0, 1])


# -- the catalog view's lasso -----------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("lasso") / "store", n=60, seed=5)


@pytest.fixture
def view(store):
    session = Session(context=AppContext(store=store))
    view = CatalogView(focus=session.focus, selection=session.selection, context=session.context)
    view.axes = ["TEFF", "LOGG", "FE_H"]
    view.ensure_built()
    return view


def teff_logg(view):
    return view.frame["TEFF"].to_numpy(np.float64), view.frame["LOGG"].to_numpy(np.float64)


def test_off_diagonal_panels_offer_a_lasso_beside_the_default_box(view):
    for p in view.plot.panels.values():
        tools = p["fig"].toolbar.tools
        box = next(t for t in tools if isinstance(t, BoxSelectTool))
        lassos = [t for t in tools if isinstance(t, LassoSelectTool)]
        assert p["fig"].toolbar.active_drag is box
        if p["y"] is None:
            assert lassos == []  # histograms select an x span only
        else:
            assert len(lassos) == 1 and lassos[0].renderers == box.renderers
            assert not lassos[0].persistent and not lassos[0].continuous


def test_lasso_selects_the_stars_inside_and_outlines_itself(view):
    teff, logg = teff_logg(view)
    tx, ty = [4100.0, 5400.0, 4300.0], [1.2, 2.0, 3.4]
    view.select_lasso("TEFF", "LOGG", tx, ty)
    inside, clear = in_triangle(teff, logg, np.array(tx), np.array(ty), 1e-6)
    assert clear.all()
    sel = view.selection
    assert sel.count == inside.sum() == len(view.table.value) and 0 < sel.count < 60
    np.testing.assert_array_equal(sel.rows, np.flatnonzero(inside))
    assert sel.description == "lasso on Teff–log g (3 vertices)"
    assert f"**{sel.count:,}** of 60 stars selected" in view.count.object
    # the lasso alone is drawn, in its own panel, as the polygon it was
    assert view.plot.outlines == {("TEFF", "LOGG"): ("lasso", tx, ty)}
    panel = view.plot.panels[("TEFF", "LOGG")]
    assert panel["outline"].data["xs"] == [tx] and panel["outline"].data["ys"] == [ty]
    assert all(p["outline"].data["xs"] == [] for k, p in view.plot.panels.items()
               if k != ("TEFF", "LOGG"))
    assert all(len(p["sel"].data["image"]) == 1
               for p in view.plot.panels.values() if p["y"] is not None)


def test_lasso_narrows_a_box_and_a_new_box_replaces_both(view):
    teff, logg = teff_logg(view)
    feh = view.frame["FE_H"].to_numpy(np.float64)
    view.mode = "new shape narrows"
    view.select_box("FE_H", None, (-0.4, 0.3))
    xs, ys = [3900.0, 5600.0, 5600.0, 3900.0], [1.0, 1.0, 2.6, 2.6]
    view.select_lasso("LOGG", "FE_H", [0.5, 2.2, 2.2, 0.5], [-1.5, -1.5, 1.0, 1.0])
    view.select_lasso("TEFF", "LOGG", xs, ys)
    expected = ((feh >= -0.4) & (feh <= 0.3) & (logg > 1) & (logg < 2.2) & (teff > 3900)
                & (teff < 5600))
    assert 0 < expected.sum() < 60
    np.testing.assert_array_equal(view.selection.rows, np.flatnonzero(expected))
    assert view.selection.description.count("; ") == 2
    assert view.selection.description.endswith("lasso on Teff–log g (4 vertices)")
    panels, outlines = view.plot.panels, view.plot.outlines
    # the histogram's span (its full height), and both lassos, each in its panel
    top = panels[("FE_H", "FE_H")]["fig"].y_range.end
    assert outlines[("FE_H", "FE_H")] == ("box", [-0.4, 0.3, 0.3, -0.4], [0, 0, top, top])
    assert outlines[("TEFF", "LOGG")][0] == outlines[("LOGG", "FE_H")][0] == "lasso"
    assert len(outlines) == 3
    drawn = {k for k, p in panels.items() if p["outline"].data["xs"]}
    assert drawn == set(outlines)

    view.mode = "new shape replaces"
    view.select_box("TEFF", "LOGG", (4000, 5000, 1.0, 3.0))
    assert view.plot.outlines == {("TEFF", "LOGG"): ("box", [4000, 5000, 5000, 4000],
                                                     [1.0, 1.0, 3.0, 3.0])}
    assert "lasso" not in view.selection.description
    view.select_lasso("TEFF", "LOGG", xs, ys)
    assert view.plot.outlines == {("TEFF", "LOGG"): ("lasso", xs, ys)}  # the box is gone
    view.clear_selection()
    assert not view.selection.active and view.plot.outlines == {}
    assert not any(p["outline"].data["xs"] for p in panels.values())


def test_a_finished_lasso_event_selects_and_other_events_do_not(view):
    plot = view.plot

    def event(final=True, **geometry):
        return SimpleNamespace(final=final, geometry=geometry)

    square = {"type": "poly", "x": np.array([4000.0, 5000, 5000, 4000]),
              "y": np.array([1.0, 1.0, 3.0, 3.0]), "sx": [], "sy": []}
    plot._on_geometry("TEFF", "LOGG", event(final=False, **square))
    plot._on_geometry("TEFF", "LOGG", event(type="poly", x=[4000.0, 5000], y=[1.0, 3.0]))
    plot._on_geometry("TEFF", "LOGG", event(type="poly", x=[4000.0, np.nan, 5000],
                                             y=[1.0, 3.0, 2.0]))
    assert not view.selection.active
    plot._on_geometry("TEFF", "LOGG", event(**square))
    teff, logg = teff_logg(view)
    expected = (teff > 4000) & (teff < 5000) & (logg > 1) & (logg < 3)
    np.testing.assert_array_equal(view.selection.rows, np.flatnonzero(expected))
    plot._on_geometry("TEFF", None, event(**square))  # a histogram has no lasso
    assert view.selection.description == "lasso on Teff–log g (4 vertices)"


# -- named subsets in the catalog view ---------------------------------------------------------


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def pixel_colours(panel) -> tuple[np.ndarray, np.ndarray]:
    """(the x of each column, the RGB of each opaque pixel per column) of a subsets image."""
    data = panel["subsets"].data
    img = np.asarray(data["image"][0], dtype=np.uint32)
    x = data["x"][0] + (np.arange(img.shape[1]) + 0.5) * data["dw"][0] / img.shape[1]
    return x, img


def test_subsets_are_drawn_in_every_panel_in_their_own_colours(view):
    teff = teff_logg(view)[0]
    cool = view.add_subset("TEFF < 4500", "cool")
    hot = view.add_subset("TEFF > 5000", "hot")
    assert cool.count == (teff < 4500).sum() > 0 and hot.count == (teff > 5000).sum() > 0
    blue, green = view._colour_of("cool"), view._colour_of("hot")
    assert blue != green and "#e6550d" not in (blue, green)  # not the selection's orange
    x, img = pixel_colours(view.plot.panels[("TEFF", "LOGG")])
    alpha = img >> 24
    opaque = alpha > 0
    colours = np.stack([img & 0xFF, (img >> 8) & 0xFF, (img >> 16) & 0xFF], axis=-1)
    left, right = opaque & (x < 4450)[None, :], opaque & (x > 5050)[None, :]
    assert left.any() and right.any()
    assert (colours[left] == rgb(blue)).all() and (colours[right] == rgb(green)).all()
    assert not opaque[:, (x > 4550) & (x < 4950)].any()  # neither subset lives there
    for key, p in view.plot.panels.items():  # every panel shows both
        if p["y"] is None:
            lines = p["subsets"].data
            assert lines["color"] == [blue, green]
            sums = [int(sum(ys[::2])) for ys in lines["ys"]]
            assert sums == [cool.count, hot.count], key
        else:
            assert (np.asarray(p["subsets"].data["image"][0]) >> 24).any(), key
    # the whole catalog turns grey under the subsets, which carry the colour
    base = np.asarray(view.plot.panels[("TEFF", "LOGG")]["base"].data["image"][0])
    shown = base[(base >> 24) > 0]
    assert shown.size and ((shown & 0xFF) == ((shown >> 8) & 0xFF)).all()  # grey: r = g
    assert (((shown >> 8) & 0xFF) == ((shown >> 16) & 0xFF)).all()  # and g = b
    legend = view.subset_legend.object
    assert "<b>cool</b>" in legend and f"{cool.count:,}</span> stars" in legend
    assert "TEFF &lt; 4500" in legend  # the user's text, escaped


def test_hiding_a_subset_takes_it_off_the_plot_and_a_rebuild_keeps_it(view):
    view.add_subset("LOGG < 2", "giants")
    panel = view.plot.panels[("TEFF", "LOGG")]
    assert len(panel["subsets"].data["image"]) == 1
    view.show_choice.value = []
    assert view.subsets.shown == [] and len(panel["subsets"].data["image"]) == 0
    assert "(hidden)" in view.subset_legend.object
    view.show_choice.value = ["giants"]
    view.axes = ["LOGG", "FE_H"]  # a new corner plot draws the shown subsets at once
    assert [n for n, _, _ in view.plot.subset_items] == ["giants"]
    assert len(view.plot.panels[("LOGG", "FE_H")]["subsets"].data["image"]) == 1


def test_a_subset_limits_the_table_and_combines_with_the_selection(view):
    teff, logg = teff_logg(view)
    cool = view.add_subset("TEFF < 4800", "cool")
    assert len(view.table.value) == 60  # drawn, but the table still lists every star
    view.table_choice.value = "cool"
    assert view.subsets.table == "cool" and len(view.table.value) == cool.count
    assert f"**{cool.count:,}** of 60 stars (subset cool)" in view.table_title.object
    view.select_box("TEFF", "LOGG", (4000, 5500, 1.0, 2.5))
    both = (teff < 4800) & (logg >= 1.0) & (logg <= 2.5)
    np.testing.assert_array_equal(view.table.value.index, np.flatnonzero(both))
    assert "(subset cool ∩ the selection)" in view.table_title.object
    assert view.selection.count == ((logg >= 1.0) & (logg <= 2.5)).sum()  # selection unchanged
    view.clear_selection()
    view.table_choice.value = "all stars"
    assert len(view.table.value) == 60 and view.subsets.table == ""


def test_a_bad_expression_or_name_says_why_and_adds_nothing(view):
    view.expr_input.value_input = "TEF < 4500 & LOGG < 2"
    assert view.add_subset() is None
    assert view.subset_message.visible and "unknown column or subset" in view.subset_message.object
    assert "did you mean TEFF" in view.subset_message.object
    assert view.add_subset("__import__('os').system('true')", "x") is None
    assert "not allowed" in view.subset_message.object or "unknown function" in \
        view.subset_message.object
    assert view.add_subset("TEFF < 4500", "TEFF") is None
    assert "is a catalog column" in view.subset_message.object
    assert view.subsets.subsets == [] and not view.subset_tools.visible
    view.expr_input.value_input = "TEFF < 4500"
    assert view.add_subset().name == "s1" and not view.subset_message.visible
    assert view.subset_tools.visible


def test_union_intersection_difference_and_delete(view):
    teff, logg = teff_logg(view)
    a = view.add_subset("TEFF < 4800", "a")
    b = view.add_subset("LOGG < 2", "b")
    union = view.combine("union")
    view.show_choice.value = ["a", "b"]
    inter = view.combine("intersection")
    view.show_choice.value = ["a", "b"]
    diff = view.combine("difference")
    assert (union.name, union.expression) == ("a_or_b", "a | b")
    assert (inter.name, diff.expression) == ("a_and_b", "a & ~b")
    np.testing.assert_array_equal(union.mask, a.mask | b.mask)
    np.testing.assert_array_equal(inter.mask, (teff < 4800) & (logg < 2))
    np.testing.assert_array_equal(diff.mask, a.mask & ~b.mask)
    view.show_choice.value = ["a"]
    assert view.combine("union") is None and "two or more" in view.subset_message.object
    assert not view.delete_subset("a") and "used by a_or_b, a_and_b, a_not_b" in \
        view.subset_message.object
    for name in ("a_or_b", "a_and_b", "a_not_b", "a"):
        assert view.delete_subset(name)
    assert [s.name for s in view.subsets.subsets] == ["b"]
    assert view.delete_choice.options == ["b"] and view.table_choice.options == ["all stars", "b"]


def table_filter(view, **filters):
    """Type ranges in the boxes above the table (number columns) or text in the header boxes."""
    numbers = {c: v for c, v in filters.items() if c in view.number_columns}
    for c, box in view.range_inputs.items():
        box.value = numbers.get(c, "")
    view.table.filters = [{"field": c, "type": "like", "value": v} for c, v in filters.items()
                          if c not in numbers]
    return view.table.current_view


def test_numeric_table_filters_read_ranges(view, store):
    cat = store.catalog
    assert {"TEFF", "LOGG", "SNR"} <= set(view.range_inputs) and "APOGEE_ID" not in view.range_inputs
    shown = table_filter(view, TEFF="4200..4800")
    np.testing.assert_array_equal(shown.index, np.flatnonzero(cat.TEFF.between(4200, 4800)))
    assert view.range_filters["TEFF"] == "4200..4800"
    shown = table_filter(view, TEFF=">4800", LOGG="<2")
    assert len(shown) == ((cat.TEFF > 4800) & (cat.LOGG < 2)).sum() > 0
    assert "table filters" in view.table_title.object and f"**{len(shown):,}**" in \
        view.table_title.object
    snr = round(float(cat.SNR.iloc[4]))  # "45" finds 45.3: what the user sees rounded
    shown = table_filter(view, SNR=str(snr))
    assert 4 in shown.index and len(shown) == ((cat.SNR >= snr - 0.5) & (cat.SNR < snr + 0.5)).sum()
    shown = table_filter(view, APOGEE_ID=str(cat.APOGEE_ID.iloc[7])[2:8])  # text: contains
    assert 7 in shown.index
    assert not view.filter_message.visible
    shown = table_filter(view, TEFF="hot")
    assert len(shown) == 0 and view.filter_message.visible
    assert "TEFF: filter &#x27;hot&#x27; not understood" in view.filter_message.object
    # a range filter narrows a table limited to a subset too
    view.add_subset("LOGG < 2.5", "low")
    view.table_choice.value = "low"
    shown = table_filter(view, TEFF="4200..4800")
    assert len(shown) == (cat.TEFF.between(4200, 4800) & (cat.LOGG < 2.5)).sum()
    assert "(subset low ∩ table filters)" in view.table_title.object
    # the filters become a subset expression, linked to the plot
    table_filter(view, TEFF="4200..4800", LOGG="<2", APOGEE_ID="2M")
    text = view.expression_from_filters()
    assert text == "TEFF >= 4200 & TEFF <= 4800 & LOGG < 2" == view.expr_input.value
    subset = view.add_subset(name="box")
    assert subset.count == ((cat.TEFF >= 4200) & (cat.TEFF <= 4800) & (cat.LOGG < 2)).sum()
    table_filter(view)
    assert view.expression_from_filters() == "" and "no range filter" in \
        view.subset_message.object


def test_the_app_view_shares_the_sessions_subsets(store):
    from dashboard.views.registry import registered

    session = Session(context=AppContext(store=store))
    spec = next(s for s in registered() if s.name == "catalog")
    view = spec.build(session)
    assert view.subsets is session.subsets
    view.add_subset("TEFF < 4500", "cool")
    assert [s.name for s in session.subsets.subsets] == ["cool"]
    assert not session.selection.active and session.focus.star_id == ""  # kept apart


def test_a_box_selection_becomes_a_subset_expression_but_a_lasso_does_not(view):
    assert view.expression_from_selection() == "" and "nothing is selected" in \
        view.subset_message.object
    view.select_box("TEFF", "LOGG", (4200, 5000, 1.5, 3.0))
    view.mode = "new shape narrows"
    view.select_box("FE_H", None, (-0.5, 0.4))
    text = view.expression_from_selection()
    assert text == ("TEFF >= 4200 & TEFF <= 5000 & LOGG >= 1.5 & LOGG <= 3 & "
                    "FE_H >= -0.5 & FE_H <= 0.4") == view.expr_input.value
    subset = view.add_subset(name="boxed")
    np.testing.assert_array_equal(subset.rows, view.selection.rows)
    view.select_lasso("TEFF", "LOGG", [4100.0, 5400.0, 4300.0], [1.2, 2.0, 3.4])
    assert view.expression_from_selection() == "" and "lasso" in view.subset_message.object
