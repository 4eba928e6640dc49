"""Pure helpers of bench/browser.py (no browser here: the bench itself is run by hand)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "browser.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_browser", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_median_p90_max(bench):
    s = bench.summary([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    assert s == {"median": 550.0, "p90": 910.0, "max": 1000.0, "n": 10}
    assert bench.summary([None, 42]) == {"median": 42.0, "p90": 42.0, "max": 42.0, "n": 1}
    assert bench.summary([]) == {"median": None, "p90": None, "max": None, "n": 0}


def test_arguments_defaults_and_refusals(bench, capsys):
    a = bench.parse_args([])
    assert (a.store, a.url, a.repeats, a.skip_load) == (None, None, 5, False)
    a = bench.parse_args(["--sessions", "5", "--repeats", "2", "--skip-load"])
    assert (a.sessions, a.repeats, a.skip_load) == (5, 2, True)
    for bad in (["--repeats", "0"], ["--sessions", "0"], ["--url", "http://x/app"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    assert "--url needs --store" in capsys.readouterr().err


def test_rss_of_this_process_and_of_none(bench):
    assert bench.rss_mb(None) is None
    if Path("/proc/self/status").exists():
        assert bench.rss_mb(os.getpid()) > 1


def test_table_lists_every_action_with_its_target(bench):
    s = {"median": 10.0, "p90": 20.0, "max": 30.0, "n": 3}
    res = {"cold_star_ms": s, "random_star_ms": s, "catalog_first_corner_ms": s,
           "box_select_ms": s, "tab_revisit_ms": {"star": s, "catalog": s},
           "latent": {"step_latency_ms": s, "drag": {"redraws_per_s": 4.2}},
           "load": {"sessions": 2, "failed": 0, "time_to_usable_s": s,
                    "server_cpu_s_per_session": 1.5, "server_rss_mb": {"before": 1}}}
    text = bench._table(res)
    assert "≤ 1500 ms" in text and "≤ 300 ms" in text and "≤ 500 ms" in text
    assert "4.2" in text and "2 sessions" in text and "1.5 s/session" in text


def test_load_only_replaces_just_its_section(bench, tmp_path):
    out = tmp_path / "browser.json"
    out.write_text('{"bench": "browser", "cold_star_ms": {"median": 1.0}, "load": {"old": 1}}')
    load = {"sessions": 2, "failed": 0}
    merged = bench.merge_load(out, {"store": {"stars": 5}, "load": load})
    assert merged["cold_star_ms"] == {"median": 1.0}
    assert merged["load"]["sessions"] == 2 and "old" not in merged["load"]
    assert merged["load"]["store"] == {"stars": 5} and merged["load"]["when"]
    other = bench.merge_load(out, {"store": None, "load": load}, "load_bokeh_clients")
    assert other["load"] == {"old": 1} and other["load_bokeh_clients"]["sessions"] == 2
    assert bench.merge_load(tmp_path / "none.json", {"load": load})["load"]["sessions"] == 2
    a = bench.parse_args(["--load-only", "--clients", "bokeh", "--sessions", "20"])
    assert a.load_only and a.clients == "bokeh" and a.sessions == 20
    with pytest.raises(SystemExit):
        bench.parse_args(["--load-only", "--skip-load"])


def test_rss_watch_stops_once_settled(bench, monkeypatch):
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench, "rss_mb", lambda pid: 500.0)
    timeline = bench.watch_rss(123, watch_s=75, settled_s=20)
    assert timeline[-1][0] == 35 and all(r == 500.0 for _, r in timeline)
    assert bench.watch_rss(None) == []


def test_corner_only_replaces_just_the_corner_and_box_select(bench, tmp_path):
    out = tmp_path / "browser.json"
    out.write_text('{"bench": "browser", "cold_star_ms": {"median": 1.0}, '
                   '"catalog_first_corner_ms": {"median": 9.0}, "box_select_ms": {"median": 8.0}}')
    s = {"median": 10.0, "p90": 20.0, "max": 30.0, "n": 3}
    result = {"when": "T", "machine": {"load_average_start": [1, 2, 3],
                                        "load_average_end": [4, 5, 6]},
              "catalog_first_corner_ms": {**s, "panels": 21}, "box_select_ms": s}
    merged = bench.merge_corner(out, result)
    assert merged["cold_star_ms"] == {"median": 1.0}  # kept
    assert merged["catalog_first_corner_ms"]["median"] == 10.0
    assert merged["catalog_first_corner_ms"]["panels"] == 21
    assert merged["box_select_ms"]["machine_load_average"] == {"start": [1, 2, 3],
                                                              "end": [4, 5, 6]}
    assert merged["box_select_ms"]["when"] == "T" and "store" in merged["box_select_ms"]
    alone = bench.merge_corner(tmp_path / "none.json", result)
    assert alone["catalog_first_corner_ms"]["median"] == 10.0
    assert bench.parse_args(["--corner-only"]).corner_only
    with pytest.raises(SystemExit):
        bench.parse_args(["--corner-only", "--load-only"])
