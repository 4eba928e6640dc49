"""Subset expressions (core.subsets): what they select, what they refuse, and that no text
ever runs as Python."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import subsets
from core.subsets import SubsetError, evaluate, make_subset, range_expression, range_mask


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(3)
    n = 500
    f = pd.DataFrame({
        "TEFF": rng.uniform(3500, 6500, n), "LOGG": rng.uniform(0, 5, n),
        "FE_H": rng.normal(-0.2, 0.4, n), "MG_FE": rng.normal(0.1, 0.15, n),
        "SNR": rng.uniform(20, 300, n).astype(np.float32),
        "TELESCOPE": rng.choice(["apo25m", "lco25m"], n),
    })
    f.loc[[3, 7], "TEFF"] = -9999.0   # APOGEE's "no value"
    f.loc[11, "LOGG"] = np.nan
    return f


def test_the_issue_examples_select_what_they_say(frame):
    t, g = frame.TEFF.to_numpy(), frame.LOGG.to_numpy()
    np.testing.assert_array_equal(evaluate("TEFF < 4500 & LOGG < 2", frame),
                                  (t < 4500) & (t > -9000) & (g < 2))
    expected = (np.abs(frame.FE_H) < 0.2) | (frame.MG_FE > 0.3)
    np.testing.assert_array_equal(evaluate("abs(FE_H) < 0.2 | MG_FE > 0.3", frame), expected)
    assert 0 < expected.sum() < len(frame)


@pytest.mark.parametrize("spelling", [
    "(TEFF < 4500) and (LOGG < 2)", "TEFF<4500&&LOGG<2", "TEFF < 4500 AND LOGG < 2",
    "teff < 4500 & logg < 2", "not (TEFF >= 4500 or LOGG >= 2) & ~isnan(TEFF) & !isnan(LOGG)",
    "TEFF - 4500 < 0 & 2 * LOGG / 2 < 2", "-TEFF > -4500 & LOGG ** 1 < 2",
])
def test_other_spellings_of_the_same_subset(frame, spelling):
    np.testing.assert_array_equal(evaluate(spelling, frame), evaluate("TEFF < 4500 & LOGG < 2",
                                                                      frame))


def test_chained_comparison_functions_text_and_missing_values(frame):
    t = frame.TEFF.to_numpy()
    np.testing.assert_array_equal(evaluate("4000 <= TEFF < 4500", frame), (t >= 4000) & (t < 4500))
    np.testing.assert_array_equal(evaluate("isnan(TEFF)", frame), t < -9000)  # sentinel = missing
    assert evaluate("isnan(LOGG)", frame).tolist().count(True) == 1
    # a missing value fails every comparison; its negation holds
    assert not evaluate("TEFF < 100000", frame)[3] and evaluate("~(TEFF < 100000)", frame)[3]
    np.testing.assert_array_equal(evaluate("TELESCOPE == 'lco25m'", frame),
                                  frame.TELESCOPE == "lco25m")
    np.testing.assert_allclose(evaluate("log10(TEFF) > 3.6", frame), t > 10 ** 3.6)
    np.testing.assert_array_equal(evaluate("sqrt(SNR) >= 10", frame), frame.SNR >= 100)
    assert evaluate("1 < 2", frame).all() and evaluate("TEFF / 0 > 1e300", frame).sum() > 0


def test_subsets_refer_to_earlier_subsets(frame):
    cool = make_subset("cool", "TEFF < 4500", frame)
    giants = make_subset("giants", "LOGG < 2", frame, {"cool": cool.mask})
    earlier = {"cool": cool.mask, "giants": giants.mask}
    both = make_subset("cool_giants", "cool & giants", frame, earlier)
    np.testing.assert_array_equal(both.mask, evaluate("TEFF < 4500 & LOGG < 2", frame))
    np.testing.assert_array_equal(evaluate("cool & ~giants", frame, earlier),
                                  cool.mask & ~giants.mask)
    np.testing.assert_array_equal(evaluate("cool | giants", frame, earlier),
                                  cool.mask | giants.mask)
    assert both.count == int(both.mask.sum()) and both.rows.tolist() == np.flatnonzero(both.mask).tolist()
    assert subsets.references("cool & ~giants & TEFF > 1", ["cool", "giants", "cool_giants"]) \
        == {"cool", "giants"}


@pytest.mark.parametrize("text, message, position", [
    ("TEF < 4500", "unknown column or subset 'TEF'; did you mean TEFF?", 1),
    ("TEFF < 4500 & LOGGG < 2", "unknown column or subset 'LOGGG'", 15),
    ("__import__('os').system('touch PWNED')", "not allowed", None),
    ("__import__('os')", "unknown function '__import__'", 1),
    ("TEFF.real > 1", "attribute access", 1),
    ("TEFF[0] > 1", "indexing", 1),
    ("(lambda: 1)() > 0", "lambda", None),
    ("[x for x in TEFF]", "comprehensions", 1),
    ("sum(x for x in TEFF) > 0", "unknown function 'sum'", 1),
    ("TEFF if LOGG else FE_H", "if/else", 1),
    ("TEFF", "gives numbers, not a condition", None),
    ("TEFF < 4500 & LOGG", "joins conditions: got a number", 15),
    ("TEFF < 4500 % 2", "operator '%' is not supported", 8),
    ("TEFF in 3", "comparison 'in' is not supported", 9),
    ("TELESCOPE < 'a'", "text can only be compared with == or !=", 13),
    ("TEFF == 'hot'", "compares text with a number", 9),
    ("(TEFF < 3", "a parenthesis is not closed", 1),
    ("TEFF < 3 $", "unexpected character '$'", 10),
    ("TEFF < 'hot", "text in quotes is not closed", 8),
    ("TEFF = 3", "not a valid expression", None),
    ("abs(TEFF, LOGG) > 1", "abs() takes one value", 1),
    ("abs < 1", "abs is a function", 1),
    ("", "empty", None),
    ("x" * 2000, "longer than", None),
    ("-" * 500 + "1 < TEFF", "nested too deeply", None),
    ("TEFF < 3 # comment", "'#' is not part of the syntax", 10),
    ("True", "not a value here", 1),
])
def test_refusals_name_the_problem_and_where(frame, text, message, position):
    with pytest.raises(SubsetError) as info:
        evaluate(text, frame)
    assert message in str(info.value)
    if position is not None:
        assert info.value.position == position


def test_subset_names_are_checked(frame):
    for bad, why in [("", "give the subset a name"), ("2cool", "letters, digits"),
                     ("teff", "is a catalog column"), ("and", "syntax"), ("abs", "syntax"),
                     ("a b", "letters"), ("x" * 41, "letters")]:
        with pytest.raises(SubsetError, match=why):
            make_subset(bad, "TEFF < 4500", frame)
    make_subset("cool", "TEFF < 4500", frame)
    with pytest.raises(SubsetError, match="already a subset named 'cool'"):
        make_subset("cool", "TEFF < 4000", frame, {"cool": np.ones(len(frame), bool)})


# -- safety: never another exception, never Python -------------------------------------------

TOKENS = ["TEFF", "LOGG", "FE_H", "TELESCOPE", "cool", "abs", "log10", "isnan", "(", ")", "<",
          "<=", "==", "!=", ">", "&", "|", "~", "!", "&&", "and", "or", "not", "+", "-", "*",
          "/", "**", "4500", "0.2", "1e400", "'apo25m'", ".", ",", "[", "]", "lambda", ":",
          "for", "in", "if", "else", "__import__", "'os'", "=", "#", "\\", "@", "`", "\n", " "]


@pytest.fixture()
def no_python(monkeypatch):
    """Make eval/exec/compile/__import__ blow up loudly if the subset code ever reached them."""
    def trap(*args, **kwargs):
        raise AssertionError("a subset expression reached Python's eval/exec")

    real_compile = builtins.compile

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:  # ast.parse builds a tree; anything else is code
            raise AssertionError("a subset expression was compiled to code")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, trap)
    monkeypatch.setattr(builtins, "compile", parse_only)
    yield


def _one_of_two_outcomes(text, frame):
    try:
        mask = evaluate(text, frame, {"cool": np.zeros(len(frame), bool)})
    except SubsetError as exc:
        assert str(exc)  # a message for the user
        return
    assert mask.dtype == bool and mask.shape == (len(frame),)


@given(st.text(max_size=120))
@settings(max_examples=400, deadline=None)
def test_any_text_gives_a_mask_or_a_subset_error(frame, text):
    _one_of_two_outcomes(text, frame)


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
@settings(max_examples=600, deadline=None)
def test_any_token_soup_gives_a_mask_or_a_subset_error(frame, text):
    _one_of_two_outcomes(text, frame)


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
@settings(max_examples=300, deadline=None)
def test_glued_token_soup_gives_a_mask_or_a_subset_error(frame, text):
    _one_of_two_outcomes(text, frame)


def test_code_is_never_executed(frame, no_python, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attacks = ["__import__('os').system('touch PWNED') == 0",
               "().__class__.__base__.__subclasses__()",
               "exec('open(\"PWNED\", \"w\")') == 0", "eval('1') == 1",
               "open('PWNED', 'w') == 0", "[c for c in ().__class__.__mro__]",
               "(lambda: __import__('os'))() == 0", "TEFF if __import__('os') else LOGG",
               "globals()['__builtins__'] == 0", "breakpoint() == 0", "f'{TEFF}' == 'x'"]
    for attack in attacks:
        with pytest.raises(SubsetError):
            evaluate(attack, frame)
    assert not (tmp_path / "PWNED").exists()
    np.testing.assert_array_equal(evaluate("TEFF < 4500", frame),
                                  (frame.TEFF < 4500) & (frame.TEFF > -9000))


def test_the_module_never_calls_eval_or_exec():
    source = Path(subsets.__file__).read_text()
    calls = {n.func.id for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__"}
    assert ".eval(" not in source and "engine=" not in source


# -- range filters --------------------------------------------------------------------------------

def test_range_filters():
    v = np.array([3999.0, 4000, 4250, 4500, 4500.4, 4600, np.nan, -9999])
    assert range_mask(v, "4000..4500").tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert range_mask(v, " 4000 .. ").tolist() == [0, 1, 1, 1, 1, 1, 0, 0]
    assert range_mask(v, "..4000").tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert range_mask(v, ">4500").tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert range_mask(v, ">=4500").tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert range_mask(v, "<4000").tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert range_mask(v, "=4250").tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    # a plain number matches what rounds to it: "45" finds 45.3 (the issue's complaint)
    snr = np.array([44.4, 44.5, 45.0, 45.3, 45.6, 4.5])
    assert range_mask(snr, "45").tolist() == [0, 1, 1, 1, 0, 0]
    assert range_mask(snr, "4.5").tolist() == [0, 0, 0, 0, 0, 1]
    assert range_mask(np.array([-0.26, -0.24, -0.2, -0.14]), "-0.2").tolist() == [0, 1, 1, 0]
    assert range_mask(np.array([0.04, 0.1, 0.149]), "0.1").tolist() == [0, 1, 1]
    for bad in ["abc", "4000..x", "..", ">>3", "4000 4500"]:
        with pytest.raises(SubsetError, match="not understood"):
            range_mask(v, bad)


def test_range_filter_as_an_expression_selects_the_same_rows(frame):
    for text in ["4000..4500", ">5000", "<=4000", "4500"]:
        expr = range_expression("TEFF", text)
        np.testing.assert_array_equal(evaluate(expr, frame), range_mask(frame.TEFF, text))
    assert range_expression("TEFF", "4000..4500") == "TEFF >= 4000 & TEFF <= 4500"
