"""Dashboard state in plain ``param`` classes: no Panel import, testable without a browser.

* :class:`FocusState` — the one star on screen (``?star=APOGEE_ID``), its spectrum and the
  model spectra drawn over it.
* :class:`SelectionState` — the catalog rows brushed in the corner plot.
* :class:`SubsetState` — named subsets (``TEFF < 4500 & LOGG < 2``), apart from both.
* :class:`ModelSlot` — one model family's loaded predictor, or why there is none.
* :class:`AppContext` — the store, one slot per model family, and the messages meant for the
  user.
* :class:`Session` — wires them: a new ``star_id`` loads that star from the store and asks
  every loaded model what it shows by itself (``Predictor.on_focus``: the VAE's
  reconstruction and χ²_ν); uploads and other views go through :meth:`Session.show`.
"""

from __future__ import annotations

import numpy as np
import param

from core.errors import StellarscopeError
from core.models.families import FAMILIES
from core.spectrum import Spectrum
from core.store import SpectraStore

#: What a failing store read may raise besides StellarscopeError (a part file truncated or
#: removed under a running server): reported to the user, never a blank page.
READ_ERRORS = (StellarscopeError, OSError, ValueError, KeyError)


def describe(spectrum: Spectrum | None, outputs: dict) -> str:
    """'7514 px, 1.2 % masked, S/N 124, VAE χ²_ν 1.35': the focused star in one line."""
    if spectrum is None:
        return ""
    parts = [f"{spectrum.n_pix} px", f"{100 * spectrum.masked_fraction():.1f} % masked"]
    snr = spectrum.snr()
    if np.isfinite(snr):
        parts.append(f"S/N {snr:.0f}")
    chi2 = outputs.get("VAE χ²_ν")
    if isinstance(chi2, float) and np.isfinite(chi2):
        parts.append(f"VAE χ²_ν {chi2:.2f}")
    return ", ".join(parts)


class FocusState(param.Parameterized):
    """The focused star: what the Star, Latent and Fit views show."""

    star_id = param.String(default="", doc="APOGEE_ID of a store star; '' for uploads or none")
    spectrum = param.ClassSelector(class_=Spectrum, default=None, allow_None=True)
    source = param.Selector(default="store", objects=["store", "upload"])
    models = param.Dict(default={}, doc="model name → model flux on the spectrum's pixels")
    outputs = param.Dict(default={}, doc="model output name → value, for the side table")
    encoding = param.Dict(default=None, allow_None=True,
                          doc="the VAE's encoding of this star: mu, sigma, labels")

    @property
    def label(self) -> str:
        if self.spectrum is None:
            return "no star selected"
        name = self.spectrum.label
        return f"{name} (uploaded)" if self.source == "upload" else name

    def add_model(self, name: str, flux, outputs: dict | None = None) -> None:
        """Draw another model over the focused star (e.g. an emulator fit from the Fit view)."""
        models = {**self.models, name: np.asarray(flux, dtype=np.float32)}
        self.param.update(models=models, outputs={**self.outputs, **(outputs or {})})


class SelectionState(param.Parameterized):
    """Catalog rows brushed in the catalog view (``rows`` None: nothing brushed)."""

    rows = param.Array(default=None, allow_None=True)
    count = param.Integer(default=0)
    total = param.Integer(default=0)
    description = param.String(default="")

    def select(self, rows, description: str = "") -> None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.param.update(rows=rows, count=int(rows.size), description=description)

    def clear(self) -> None:
        self.param.update(rows=None, count=self.total, description="")

    @property
    def active(self) -> bool:
        return self.rows is not None


class SubsetState(param.Parameterized):
    """Named catalog subsets (``core.subsets.Subset``, in the order made: a subset may name
    earlier ones), kept apart from the brushed selection and the focused star."""

    subsets = param.List(default=[], doc="core.subsets.Subset objects, oldest first")
    shown = param.List(default=[], doc="names drawn over the corner plot")
    table = param.String(default="", doc="the subset the table is limited to ('' none)")

    def masks(self) -> dict:
        return {s.name: s.mask for s in self.subsets}

    def get(self, name: str):
        return next((s for s in self.subsets if s.name == name), None)

    def add(self, subset, show: bool = True) -> None:
        self.param.update(subsets=[*self.subsets, subset],
                          shown=[*self.shown, subset.name] if show else self.shown)

    def remove(self, name: str) -> None:
        self.param.update(subsets=[s for s in self.subsets if s.name != name],
                          shown=[n for n in self.shown if n != name],
                          table="" if self.table == name else self.table)


class ModelSlot(param.Parameterized):
    """One model family's place in the app: its loaded predictor, or why there is none."""

    family = param.String(default="")
    model = param.Parameter(default=None, doc="the family's Predictor.load(dir), or None")
    where = param.String(default="", doc="the directory it came from")
    problem = param.String(default="", doc="why there is no model (shown by views as is)")
    training = param.String(default="", doc="'training in progress: epoch 7 …' or ''")


class AppContext(param.Parameterized):
    """What every view needs from the process: the store, the models, user messages.

    Models live in one :class:`ModelSlot` per registered family (:meth:`slot`); ``models=``
    fills slots directly (tests, benches): ``AppContext(store=s, models={"vae": p})``.
    """

    store = param.ClassSelector(class_=SpectraStore, default=None, allow_None=True)
    store_path = param.String(default="")
    store_problem = param.String(default="", doc="why there is no store, for the UI")
    slots = param.Dict(default={}, doc="family name → ModelSlot")
    model_dirs = param.Dict(default={}, doc="family → model directory named on the command "
                                            "line ($STELLARSCOPE_MODELS); searched otherwise")
    model_notes = param.List(default=[], doc="models named on the command line that are unusable")
    message = param.String(default="")
    message_kind = param.Selector(default="info", objects=["info", "success", "warning", "error"])
    message_count = param.Integer(default=0, doc="bumped per message so repeats notify again")
    status = param.String(default="", doc="one line about what is on screen, for the sidebar")
    catalog_version = param.Integer(default=0, doc="bumped when columns are added to the store")

    def __init__(self, models: dict | None = None, **params):
        super().__init__(**params)
        self.slots = dict(self.slots)
        for family, model in (models or {}).items():
            self.slot(family).model = model

    def slot(self, family: str) -> ModelSlot:
        """The slot of ``family``; always a slot (an empty one says there is no model yet)."""
        if family not in self.slots:
            self.slots[family] = ModelSlot(family=family, problem=f"no {family} model yet")
        return self.slots[family]

    @property
    def vae(self):
        """The VAE predictor or None (read-only; new code asks ``slot("vae")``)."""
        return self.slot("vae").model

    def notify(self, text: str, kind: str = "info") -> None:
        """A message for the user, shown as a notification; plain text (the app escapes it)."""
        self.param.update(message=str(text), message_kind=kind,
                          message_count=self.message_count + 1)

    def fail(self, exc: BaseException | str) -> None:
        self.notify(str(exc), "error")

    @property
    def is_mock(self) -> bool:
        return bool(self.store is not None and self.store.is_mock)


class Session(param.Parameterized):
    """One browser session's state and the rules that keep it consistent."""

    focus = param.ClassSelector(class_=FocusState)
    selection = param.ClassSelector(class_=SelectionState)
    context = param.ClassSelector(class_=AppContext)
    subsets = param.ClassSelector(class_=SubsetState)

    def __init__(self, **params):
        params.setdefault("focus", FocusState())
        params.setdefault("selection", SelectionState())
        params.setdefault("subsets", SubsetState())
        params.setdefault("context", AppContext())
        super().__init__(**params)
        if self.context.store is not None:
            self.selection.param.update(total=len(self.context.store),
                                        count=len(self.context.store))
        self._loading = False
        self.focus.param.watch(self._on_star_id, "star_id")
        # a model that arrives (or is retrained) redraws what it shows of the focused star
        for family in FAMILIES:
            self.context.slot(family).param.watch(self._on_model, "model")
        self._auto_models: set[str] = set()

    # -- choosing a star ------------------------------------------------------------------
    def select_star(self, star) -> bool:
        """Focus a store star by APOGEE_ID (or row number); False and a message if unknown."""
        store = self.context.store
        if store is None:
            self.context.fail(self.context.store_problem or "no store is open")
            return False
        try:
            row = store.row_of(star)
        except READ_ERRORS as exc:
            self.context.fail(exc)
            return False
        star_id = str(store.catalog["APOGEE_ID"].iloc[row])
        if star_id == self.focus.star_id and self.focus.source == "store":
            return True
        self.focus.star_id = star_id
        return self.focus.star_id == star_id and self.focus.spectrum is not None

    def random_star(self, rng: np.random.Generator | None = None) -> bool:
        store = self.context.store
        if store is None or len(store) == 0:
            self.context.fail(self.context.store_problem or "no store is open")
            return False
        rng = rng or np.random.default_rng()
        rows = self.selection.rows if self.selection.active and self.selection.count else None
        row = int(rng.choice(rows)) if rows is not None else int(rng.integers(len(store)))
        return self.select_star(row)

    def step_star(self, step: int) -> bool:
        """Focus the next (step 1) or previous (−1) star: within the brushed selection when
        there is one, else in catalog order; wraps around at the ends."""
        store = self.context.store
        if store is None or len(store) == 0:
            self.context.fail(self.context.store_problem or "no store is open")
            return False
        rows = (self.selection.rows if self.selection.active and self.selection.count
                else np.arange(len(store)))
        current = -1
        if self.focus.source == "store" and self.focus.star_id and store.has_star(self.focus.star_id):
            current = store.row_of(self.focus.star_id)
        # the first selected row after (or before) the current one, even if it is not selected
        pos = np.searchsorted(rows, current, side="right" if step > 0 else "left")
        pos = pos % len(rows) if step > 0 else (pos - 1) % len(rows)
        return self.select_star(int(rows[pos]))

    def _on_star_id(self, event) -> None:
        if self._loading:
            return
        star_id = event.new.strip()
        if not star_id:
            if self.focus.source == "store":
                self.show(None)
            return
        store = self.context.store
        if (" " in star_id and store is not None and not store.has_star(star_id)
                and store.has_star(star_id.replace(" ", "+"))):
            # a '+' typed into the URL (?star=2M…+…) arrives as a space
            star_id = star_id.replace(" ", "+")
        try:
            if store is None:
                raise StellarscopeError(self.context.store_problem or "no store is open")
            spectrum = store.spectrum(star_id)
            extras = self.model_outputs(spectrum)
        except READ_ERRORS as exc:
            # a store broken under a running server (a truncated part) is named, not raised
            self.context.fail(exc if isinstance(exc, StellarscopeError) else
                              f"{store.path}: could not read {star_id} ({exc})")
            self._revert(event.old)
            return
        self.show(spectrum, source="store", star_id=star_id, **extras)

    def _revert(self, old: str) -> None:
        self._loading = True
        try:
            self.focus.star_id = old
        finally:
            self._loading = False

    # -- models -----------------------------------------------------------------------------
    def model_outputs(self, spectrum: Spectrum) -> dict:
        """Model spectra, side-table outputs and encoding of a spectrum (thread-safe).

        A model that fails on this spectrum is reported, not raised: the spectrum still shows.
        """
        models, outputs, encoding = {}, {}, None
        if spectrum.model is not None:
            models["ASPCAP model"] = spectrum.model
        row = None
        for family, slot in list(self.context.slots.items()):
            if slot.model is None or not hasattr(slot.model, "on_focus"):
                continue
            if row is None:
                row = self._catalog_row(spectrum) or {}
            try:
                out = slot.model.on_focus(spectrum, row or None)
            except StellarscopeError as exc:
                outputs[family.upper()] = f"not applicable: {exc}"
                continue
            if out:
                models.update(out.get("models", {}))
                outputs.update(out.get("outputs", {}))
                encoding = out.get("extra", {}).get("encoding", encoding)
        self._auto_models.update(models)
        return {"models": models, "outputs": outputs, "encoding": encoding}

    def _catalog_row(self, spectrum: Spectrum) -> dict | None:
        """The store's catalog row for a spectrum from elsewhere (an upload), if it has one."""
        store, star = self.context.store, spectrum.apogee_id
        if store is None or not star or not store.has_star(star):
            return None
        return store.catalog.iloc[store.row_of(star)].to_dict()

    def show(self, spectrum: Spectrum | None, *, source: str = "store", star_id: str = "",
             models: dict | None = None, outputs: dict | None = None,
             encoding: dict | None = None) -> None:
        """Put a spectrum (store star or upload) on screen in one batch of changes."""
        self._loading = True
        try:
            self.focus.param.update(
                spectrum=spectrum, source=source, star_id=star_id if source == "store" else "",
                models=dict(models or {}), outputs=dict(outputs or {}), encoding=encoding,
            )
        finally:
            self._loading = False
        self.context.status = describe(spectrum, outputs or {})

    def _on_model(self, event) -> None:
        spectrum = self.focus.spectrum
        if spectrum is None:
            return
        extras = self.model_outputs(spectrum)
        # overlays a view added (a fit) stay; the automatic ones are recomputed
        kept = {k: v for k, v in self.focus.models.items() if k not in self._auto_models}
        extras["models"] = {**extras["models"], **kept}
        self.focus.param.update(**extras)
