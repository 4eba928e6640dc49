"""TOPCAT-style catalog subsets: a boolean expression over catalog columns, checked and
evaluated without running any Python.

``TEFF < 4500 & LOGG < 2``, ``abs(FE_H) < 0.2 | MG_FE > 0.3``, ``giants & ~metal_poor``:
the text is tokenised and parsed by Python's own parser (:mod:`ast`, which only builds a
tree), then a walker that knows a short whitelist of node types evaluates it with numpy on
the catalog's columns.  Anything else (attribute access, subscripts, lambdas,
comprehensions, unknown functions or names) is refused with a :class:`SubsetError` that says
what and where.  ``eval``/``exec`` are never used.

Syntax: column names (case-insensitive when unambiguous), numbers, quoted text (only for
``==``/``!=`` against a text column such as ``TELESCOPE == 'apo25m'``), ``+ - * / **``,
comparisons (chains such as ``4000 < TEFF <= 4500`` too), ``&``/``and``/``&&``,
``|``/``or``/``||``, ``~``/``not``/``!``, parentheses, the functions in :data:`FUNCTIONS`,
and the names of earlier subsets.  ``&`` and ``|`` bind more loosely than comparisons (as in
pandas' ``query``), so ``TEFF < 4500 & LOGG < 2`` means what it says.  Missing values (NaN,
APOGEE's −9999) fail every comparison; ``isnan(X)`` finds them.

Table header filters (:func:`range_mask`) use a smaller syntax: ``4000..4500``, ``>4500``,
``<=2``, ``..4500``, or a number (the values that round to it).
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import re
import tokenize
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import StellarscopeError
from .labels import clean

__all__ = ["FUNCTIONS", "Subset", "SubsetError", "evaluate", "check_name", "make_subset",
           "range_mask", "range_expression", "references"]

MAX_LENGTH = 1000
MAX_DEPTH = 60
MAX_NAME = 40

FUNCTIONS = {
    "abs": np.abs, "sqrt": np.sqrt, "log10": np.log10, "log": np.log, "exp": np.exp,
    "isnan": lambda v: ~np.isfinite(v),   # missing: NaN, inf or an APOGEE sentinel
    "isfinite": np.isfinite,
}
#: functions that answer yes/no rather than a number
_PREDICATES = ("isnan", "isfinite")

_COMPARE = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater,
            ast.GtE: np.greater_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal}
_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
          ast.Div: np.true_divide, ast.Pow: np.power}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
           ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<",
           ast.RShift: ">>", ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|",
           ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
           ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
           ast.IsNot: "is not"}
#: what a refused construct is called in messages
_CONSTRUCTS = {
    ast.Attribute: "attribute access ('.')", ast.Subscript: "indexing ('[...]')",
    ast.Lambda: "lambda", ast.IfExp: "if/else", ast.NamedExpr: "':='",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.List: "lists", ast.Tuple: "tuples (a stray ',')", ast.Set: "sets", ast.Dict: "dicts",
    ast.JoinedStr: "f-strings", ast.Starred: "'*' unpacking", ast.Slice: "slices",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}


class SubsetError(StellarscopeError, ValueError):
    """A subset expression (or name, or range filter) that cannot be used; says why and, when
    it is one place in the text, where (``position``: 1-based character)."""

    def __init__(self, problem: str, position: int | None = None, expression: str = ""):
        self.problem, self.position, self.expression = problem, position, expression
        where = f" (at character {position})" if position else ""
        super().__init__(f"{problem}{where}")


@dataclass(frozen=True)
class Subset:
    """A named subset of the catalog rows: its expression and the rows it holds."""

    name: str
    expression: str
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.mask)


# -- tokens -----------------------------------------------------------------------------------

def _rewrite(text: str) -> tuple[str, list[int]]:
    """``text`` with TOPCAT/pandas spellings turned into Python's (``&``→``and``,
    ``||``→``or``, ``!``/``~``→``not``), and for each character of the result the position
    in ``text`` it came from (for messages)."""
    out: list[str] = []
    where: list[int] = []

    def put(s: str, pos: int) -> None:
        out.append(s)
        where.extend([pos] * len(s))

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except tokenize.TokenError:
        raise _unbalanced(text) from None
    except (SyntaxError, ValueError) as exc:  # IndentationError among them
        raise SubsetError(f"cannot read the expression ({exc.args[0] if exc.args else exc})",
                          expression=text) from None
    end, prev = 0, None
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
                        tokenize.DEDENT, tokenize.COMMENT):
            if tok.type == tokenize.COMMENT:
                raise SubsetError("'#' is not part of the syntax", tok.start[1] + 1, text)
            continue
        start, stop = tok.start[1], tok.end[1]
        if tok.start[0] != 1 or tok.end[0] != 1:
            raise SubsetError("the expression must be one line", expression=text)
        for i in range(end, start):
            put(text[i], i)
        s = tok.string
        if tok.type == tokenize.ERRORTOKEN:
            if s.isspace():
                put(s, start)
            elif s == "!":
                put(" not ", start)
            elif s in "'\"":
                raise SubsetError("text in quotes is not closed", start + 1, text)
            else:
                raise SubsetError(f"unexpected character {s!r}", start + 1, text)
        elif tok.type == tokenize.OP and s in "&|" and prev is not None \
                and prev.string == s and prev.end[1] == start:
            pass  # the second half of && or ||
        elif tok.type == tokenize.OP and s in ("&", "|", "~"):
            put({"&": " and ", "|": " or ", "~": " not "}[s], start)
        elif tok.type == tokenize.NAME and s in ("AND", "OR", "NOT"):
            put(f" {s.lower()} ", start)
        else:
            put(s, start)
        end, prev = stop, tok
    code = "".join(out)
    lead = len(code) - len(code.lstrip())  # a leading 'not' must not read as an indent
    return code[lead:], where[lead:]


def _unbalanced(text: str) -> SubsetError:
    opened = []
    for i, ch in enumerate(text):
        if ch in "([{":
            opened.append(i)
        elif ch in ")]}" and opened:
            opened.pop()
    pos = opened[-1] + 1 if opened else None
    return SubsetError("a parenthesis is not closed", pos, text)


# -- parsing and evaluation ----------------------------------------------------------------------

class _Evaluator:
    """Walks a parsed expression over ``frame``'s columns; refuses what it does not know."""

    def __init__(self, text: str, code: str, where: list[int], frame: pd.DataFrame,
                 subsets: dict[str, np.ndarray]):
        self.text, self.code, self.where = text, code, where
        self.frame, self.subsets, self.n = frame, subsets, len(frame)
        self.code_bytes = code.encode("utf-8")
        self.lower = {}
        for c in frame.columns:
            self.lower.setdefault(str(c).lower(), []).append(str(c))

    def pos(self, node) -> int | None:
        col = getattr(node, "col_offset", None)
        if col is None:
            return None
        chars = len(self.code_bytes[:col].decode("utf-8", "ignore"))
        return self.where[min(chars, len(self.where) - 1)] + 1 if self.where else None

    def fail(self, problem: str, node=None) -> SubsetError:
        return SubsetError(problem, self.pos(node) if node is not None else None, self.text)

    # each value is (kind, array or scalar), kind in "num", "bool", "str"
    def walk(self, node, depth: int = 0):
        if depth > MAX_DEPTH:
            raise self.fail("the expression is nested too deeply", node)
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.walk(node.body, d)
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            vals = [self.need(self.walk(v, d), "bool", v, f"'{word}' (& |) joins conditions")
                    for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = (out & v) if word == "and" else (out | v)
            return "bool", out
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return "bool", ~np.asarray(self.need(self.walk(node.operand, d), "bool",
                                                     node.operand, "'not' (~ !) negates a condition"))
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                v = self.need(self.walk(node.operand, d), "num", node.operand,
                              "a sign goes before a number")
                return "num", -v if isinstance(node.op, ast.USub) else v
            raise self.fail("operator '~' is not supported here", node)
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _ARITH:
                raise self.fail(f"operator '{_SYMBOL.get(op, op.__name__)}' is not supported "
                                "(use + - * / **)", node)
            sym = _SYMBOL[op]
            a = self.need(self.walk(node.left, d), "num", node.left, f"'{sym}' needs numbers")
            b = self.need(self.walk(node.right, d), "num", node.right, f"'{sym}' needs numbers")
            return "num", _ARITH[op](a, b)
        if isinstance(node, ast.Compare):
            return "bool", self.compare(node, d)
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or v is None or v is Ellipsis:
                raise self.fail(f"'{v}' is not a value here (use a number or a comparison)",
                                node)
            if isinstance(v, (int, float)):
                try:
                    return "num", np.float64(v)
                except OverflowError:
                    raise self.fail("number too large", node) from None
            if isinstance(v, str):
                return "str", v
            raise self.fail(f"{type(v).__name__} values are not supported", node)
        what = _CONSTRUCTS.get(type(node), f"'{type(node).__name__}'")
        raise self.fail(f"{what}: not allowed in a subset expression", node)

    def need(self, value, kind: str, node, why: str):
        got, v = value
        if got != kind:
            noun = {"num": "a number", "bool": "a condition", "str": "text"}
            raise self.fail(f"{why}: got {noun[got]}", node)
        return v

    def compare(self, node: ast.Compare, d: int):
        left = self.walk(node.left, d)
        out = None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.walk(right_node, d)
            fn = _COMPARE.get(type(op))
            sym = _SYMBOL.get(type(op), "?")
            if fn is None:
                raise self.fail(f"comparison '{sym}' is not supported (use < <= > >= == !=)",
                                right_node)
            kinds = {left[0], right[0]}
            if "bool" in kinds:
                raise self.fail(f"'{sym}' compares numbers, not conditions: add parentheses, "
                                "e.g. (TEFF < 4500) & (LOGG < 2)", right_node)
            if kinds == {"str"}:
                if fn not in (np.equal, np.not_equal):
                    raise self.fail(f"text can only be compared with == or !=, not '{sym}'",
                                    right_node)
            elif kinds != {"num"}:
                raise self.fail(f"'{sym}' compares text with a number", right_node)
            res = fn(left[1], right[1])
            out = res if out is None else out & res
            left = right
        return out

    def call(self, node: ast.Call, d: int):
        if not isinstance(node.func, ast.Name):
            what = _CONSTRUCTS.get(type(node.func), "this call")
            raise self.fail(f"{what}: not allowed in a subset expression", node.func)
        name = node.func.id
        fn = FUNCTIONS.get(name) or FUNCTIONS.get(name.lower())
        if fn is None:
            raise self.fail(f"unknown function '{name}' (known: {', '.join(FUNCTIONS)})", node)
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.fail(f"{name}() takes one value", node)
        v = self.need(self.walk(node.args[0], d), "num", node.args[0],
                      f"{name}() needs a number")
        kind = "bool" if name.lower() in _PREDICATES else "num"
        return kind, fn(v)

    def name(self, node: ast.Name):
        n = node.id
        if n in self.subsets:
            return "bool", np.asarray(self.subsets[n], dtype=bool)
        col = n if n in self.frame.columns else None
        if col is None:
            same = self.lower.get(n.lower(), [])
            if len(same) == 1:
                col = same[0]
        if col is None:
            if n in FUNCTIONS:
                raise self.fail(f"{n} is a function: write {n}(COLUMN)", node)
            known = [str(c) for c in self.frame.columns] + list(self.subsets)
            close = difflib.get_close_matches(n.upper(), [k.upper() for k in known], n=1)
            hint = ""
            if close:
                hint = "; did you mean " + next(k for k in known if k.upper() == close[0]) + "?"
            raise self.fail(f"unknown column or subset '{n}'{hint}", node)
        s = self.frame[col]
        if pd.api.types.is_numeric_dtype(s):
            return "num", clean(s.to_numpy(dtype=np.float64, na_value=np.nan))
        return "str", s.astype(str).to_numpy()


def evaluate(expression: str, frame: pd.DataFrame,
             subsets: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The rows of ``frame`` where ``expression`` holds, as a boolean mask.

    ``subsets`` maps earlier subsets' names to their masks (over the same rows).  Raises
    :class:`SubsetError`, and nothing else, for any text that is not a valid expression.
    """
    text = expression if isinstance(expression, str) else str(expression)
    if not text.strip():
        raise SubsetError("the expression is empty", expression=text)
    if len(text) > MAX_LENGTH:
        raise SubsetError(f"the expression is longer than {MAX_LENGTH} characters",
                          expression=text)
    for i, ch in enumerate(text):
        if not ch.isprintable() and not ch.isspace():
            raise SubsetError(f"unexpected character {ch!r}", i + 1, text)
    flat = "".join(" " if ch.isspace() else ch for ch in text)  # same length: same positions
    code, where = _rewrite(flat)
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and such: we say it
            warnings.simplefilter("ignore")
            tree = ast.parse(code, mode="eval")
    except SyntaxError as exc:
        pos = None
        if exc.offset and where:
            pos = where[min(max(exc.offset - 1, 0), len(where) - 1)] + 1
        raise SubsetError(f"not a valid expression ({exc.msg})", pos, text) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise SubsetError(f"not a valid expression ({exc})", expression=text) from None
    ev = _Evaluator(text, code, where, frame, subsets or {})
    try:
        with np.errstate(all="ignore"):
            kind, value = ev.walk(tree)
    except RecursionError:
        raise SubsetError("the expression is nested too deeply", expression=text) from None
    if kind != "bool":
        raise SubsetError("the expression gives " + ("numbers" if kind == "num" else "text")
                          + ", not a condition: compare it, e.g. TEFF < 4500",
                          expression=text)
    return np.broadcast_to(np.asarray(value, dtype=bool), (len(frame),)).copy()


def references(expression: str, names) -> set[str]:
    """Which of ``names`` (subset names) ``expression`` mentions."""
    found = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
    return {n for n in names if n in found}


def check_name(name: str, columns, taken=()) -> str:
    """``name`` stripped, if it can name a new subset; :class:`SubsetError` says why not."""
    name = str(name).strip()
    if not name:
        raise SubsetError("give the subset a name")
    if len(name) > MAX_NAME or not name.isidentifier() or not name.isascii():
        raise SubsetError(f"subset name {name!r}: use letters, digits and _ (up to {MAX_NAME} "
                          "characters, not starting with a digit)")
    lowered = name.lower()
    if keyword.iskeyword(name) or lowered in ("and", "or", "not") or name in FUNCTIONS:
        raise SubsetError(f"subset name {name!r} is a word of the expression syntax")
    if any(str(c).lower() == lowered for c in columns):
        raise SubsetError(f"subset name {name!r} is a catalog column")
    if name in taken:
        raise SubsetError(f"there is already a subset named {name!r}")
    return name


def make_subset(name: str, expression: str, frame: pd.DataFrame,
                earlier: dict[str, np.ndarray] | None = None) -> Subset:
    """A checked, evaluated :class:`Subset` (``earlier``: subsets it may refer to)."""
    earlier = earlier or {}
    name = check_name(name, frame.columns, earlier)
    return Subset(name, str(expression).strip(), evaluate(expression, frame, earlier))


# -- table header filters -------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<lo>{_NUMBER})?\s*\.\.\s*(?P<hi>{_NUMBER})?\s*$")
_BOUND = re.compile(rf"^\s*(?P<op><=|>=|<|>|==|=)\s*(?P<v>{_NUMBER})\s*$")
_PLAIN = re.compile(rf"^\s*(?P<v>{_NUMBER})\s*$")


def _range_conditions(text: str) -> list[tuple[str, float]]:
    """``4000..4500`` → [('>=', 4000), ('<=', 4500)]; SubsetError when not understood."""
    if m := _RANGE.match(text):
        conds = []
        if m["lo"]:
            conds.append((">=", float(m["lo"])))
        if m["hi"]:
            conds.append(("<=", float(m["hi"])))
        if conds:
            return conds
    elif m := _BOUND.match(text):
        op = "==" if m["op"] == "=" else m["op"]
        return [(op, float(m["v"]))]
    elif m := _PLAIN.match(text):
        v = m["v"].lstrip("+-")
        mantissa = v.split("e")[0].split("E")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        exp = int(re.split("[eE]", v)[1]) if re.search("[eE]", v) else 0
        half = 0.5 * 10.0 ** (exp - decimals)
        value = float(m["v"])
        return [(">=", value - half), ("<", value + half)]
    raise SubsetError(f"filter {text.strip()!r} not understood: write 4000..4500, >4500, "
                      "<=2 or a number")


_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "==": np.equal}


def range_mask(values, text: str) -> np.ndarray:
    """Rows whose value matches a header filter (``4000..4500``, ``>4500``, ``<2``, ``45``:
    a plain number matches what rounds to it at the precision typed); missing values never
    match."""
    v = clean(np.asarray(values, dtype=np.float64))
    mask = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        for op, bound in _range_conditions(str(text)):
            mask &= _OPS[op](v, bound)
    return mask


def range_expression(column: str, text: str) -> str:
    """The subset expression a header filter means: ``TEFF >= 4000 & TEFF <= 4500``."""
    return " & ".join(f"{column} {op} {bound:.10g}" for op, bound in _range_conditions(str(text)))
