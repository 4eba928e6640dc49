"""Model families: what each kind of model is called and where its parts live.

A family ties together one ``model_type`` of saved models (see :mod:`core.models`), its
training task (``stellarscope train NAME``), its predictor (``stellarscope infer NAME`` and
the app) and its shipped demo.  Parts are named as ``"module:attr"`` strings and imported on
first use, so registering a family costs nothing at import time.  A new family is one module
plus one :func:`register_family` line.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StellarscopeError


class ModelNotFoundError(StellarscopeError):
    """No model of a family where one was asked for or looked for."""


@dataclass(frozen=True)
class Family:
    name: str                          # CLI and registry key: "vae", "emulator"
    title: str                         # for people: "spectrum VAE"
    model_types: tuple[str, ...]       # config.json model_type values that belong to it
    demo: str = ""                     # directory name of its demo under the model homes
    task: str = ""                     # "module:attr" of its training task factory
    predictor: str = ""                # "module:attr" of its Predictor class
    column_prefix: str = ""            # prefix of the catalog columns its inference writes

    def part(self, which: str):
        """Import and return the ``task`` or ``predictor`` named by this family."""
        ref = getattr(self, which)
        if not ref:
            raise StellarscopeError(f"the {self.title} family has no {which}")
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)


#: name → Family.  Entries for later families are added by their own modules' callers.
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise StellarscopeError(f"unknown model family {name!r} (known: "
                                f"{', '.join(sorted(FAMILIES))})") from None


def family_of(model_type: str) -> Family | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def _model_type(path: Path) -> str | None:
    from .io import read_config

    try:
        return read_config(path).get("model_type")
    except (StellarscopeError, OSError, ValueError):
        return None


def candidates(family: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    """Directories to try for ``family``, most specific first.

    ``explicit`` (a path, or a name under ``$STELLARSCOPE_HOME/models``) stands alone when
    given.  Otherwise: the family's demo name under ``$STELLARSCOPE_HOME/models``, then the
    newest other model of the family there, then the shipped ``assets/models`` demo.
    """
    from ..paths import SHIPPED_MODELS, models_dir

    fam = get_family(family)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists() and not p.is_absolute() and (models_dir() / str(explicit)).exists():
            p = models_dir() / str(explicit)
        return [p]
    home = models_dir()
    out = []
    if fam.demo:
        out.append(home / fam.demo)
    others = [d for d in home.iterdir() if d.is_dir() and d.name != fam.demo
              and (d / "config.json").is_file() and _model_type(d) in fam.model_types]
    out += sorted(others, key=lambda d: (d / "config.json").stat().st_mtime, reverse=True)
    if fam.demo:
        out.append(SHIPPED_MODELS / fam.demo)
    return out


def find(family: str, explicit: str | os.PathLike | None = None) -> Path:
    """The model directory of ``family``: the explicit one, else the first that exists.

    Raises :class:`ModelNotFoundError` naming where it looked; a directory of another
    family is refused with its model_type.
    """
    fam = get_family(family)
    looked = candidates(family, explicit)
    if explicit and not (looked[0] / "config.json").is_file():
        what = ("no such model directory" if not looked[0].exists()
                else "not a saved model (no config.json)")
        raise ModelNotFoundError(f"{looked[0]}: {what}; --model takes a model directory or the "
                                 "name of one under $STELLARSCOPE_HOME/models")
    for d in looked:
        if not (d / "config.json").is_file():
            continue
        kind = _model_type(d)
        if kind not in fam.model_types:
            raise ModelNotFoundError(f"{d}: holds a {kind!r} model, not a {fam.title}")
        return d
    where = ", ".join(str(p) for p in looked)
    hint = f"train one with `stellarscope train {family}` or pass --model"
    raise ModelNotFoundError(f"no {fam.title} found (looked in {where}); {hint}")


register_family(Family(
    name="vae", title="spectrum VAE", model_types=("vae",), demo="vae-demo",
    task="core.train.vae:task", predictor="core.inference.vae:VAEPredictor",
    column_prefix="VAE"))
register_family(Family(
    name="emulator", title="spectral emulator", model_types=("emulator",),
    demo="emulator-demo", task="core.train.emulator:task",
    predictor="core.inference.emulator:EmulatorPredictor", column_prefix="FIT"))
register_family(Family(
    name="transformer", title="spectral transformer", model_types=("transformer",),
    demo="transformer-demo", task="core.train.transformer:task",
    predictor="core.inference.transformer:TransformerPredictor", column_prefix="TF"))
