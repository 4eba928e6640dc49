"""The Stellarscope dashboard: ``panel serve dashboard/app.py`` or ``stellarscope serve``.

The store comes from ``$STELLARSCOPE_STORE`` (else the demo store under
``$STELLARSCOPE_HOME``); each registered model family gets one model slot, filled from
``$STELLARSCOPE_MODELS`` (model directories named on the command line) or else found by
:func:`core.models.find`.  The tabs are the registered views (:mod:`dashboard.views`).  Each
browser session builds its own state, and a view only when its tab is first opened; stores,
models, catalog frames and indexes are shared by all sessions of the process, cached.
"""

from __future__ import annotations

import html
import importlib
import io
import logging
import os
import time
from collections.abc import Mapping

import panel as pn
import param
from panel.io.resources import CDN_DIST, get_dist_path
from panel.theme import Fast

from core.errors import StellarscopeError
from core.models import FAMILIES, get_family
from dashboard import data, deferred, page_resources, persist
from dashboard.jobs import on_doc, session_doc
from dashboard.shortcuts import Shortcuts
from dashboard.state import AppContext, ModelSlot, Session
from dashboard.views.registry import ViewSpec, registered, tab_name
from dashboard.views.upload import StarPicker

TITLE = "Stellarscope"
ACCENT = "#1f4e79"
MODEL_POLL_MS = 15_000
#: The same message again within this many seconds is not shown twice.
REPEAT_S = 3.0


def escape(text) -> str:
    """Text from outside (star IDs, file names, session content, error messages) made safe
    for the HTML that notifications, Markdown and HTML panes render."""
    return html.escape(str(text), quote=True)


#: What a user reads for an error that is not one of ours (the details go to the server log).
UNEXPECTED = ("Something went wrong on the server; its log has the details. If the page "
              "misbehaves, reload it.")


def user_message(exc: BaseException) -> str:
    """An error as a user should read it: our own errors say what is wrong in their words;
    anything else (a TypeError, a KeyError …) is logged with its traceback and named only."""
    if isinstance(exc, StellarscopeError):
        return str(exc)
    logging.getLogger(__name__).error("unexpected error in the dashboard", exc_info=exc)
    return UNEXPECTED


def _notify_exception(exc: BaseException) -> None:
    """Any error escaping a callback becomes a notification, never a traceback on the page."""
    if pn.state.notifications is not None:
        pn.state.notifications.error(escape(user_message(exc)), duration=10_000)


class OfflineFast(Fast):
    """Panel's Fast design without its Google-fonts stylesheet: the page asks nothing of any
    host but this server (Open Sans, when installed locally, is still used)."""

    # the design's own module, named so it resolves to Panel's bundled copy under any subclass
    _resources = {**Fast._resources, "font": {}, "js_modules": {
        **Fast._resources["js_modules"], "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"}}


pn.extension("tabulator", "filedropper", notifications=True, loading_indicator=True,
             design=OfflineFast,
             exception_handler=_notify_exception, disconnect_notification=(
                 "Connection to the Stellarscope server lost; reload the page."))


def dataset_card(ctx: AppContext) -> pn.viewable.Viewable:
    store = ctx.store
    if store is None:
        return pn.pane.Alert(f"**No dataset.** {escape(ctx.store_problem)}",
                             alert_type="danger", css_classes=["ss-dataset"],
                             styles={"overflow-wrap": "anywhere"})  # long paths wrap
    badge = ""
    if store.is_mock:
        badge = ('<div class="ss-mock-badge" style="background:#ffb74d;color:#3e2200;'
                 'font-weight:700;padding:6px 10px;border-radius:6px;margin-bottom:6px;'
                 'letter-spacing:0.04em">MOCK SURVEY: synthetic spectra with known true '
                 'labels</div>')
    text = (f"{badge}<b>{escape(store.title)}</b> ({escape(store.kind)})<br>"
            f"{len(store):,} stars on the {escape(store.grid.name)} grid "
            f"({store.grid.n_pix} px)<br><span style='font-size:85%;color:#666'>"
            f"{escape(store.path)}</span>")
    return pn.pane.HTML(text, sizing_mode="stretch_width", css_classes=["ss-dataset"])


def model_summary(model) -> str:
    """What a loaded predictor is, in a few words, from what it exposes."""
    parts = []
    if getattr(model, "n_latent", None):
        parts.append(f"{int(model.n_latent)} latents")
    labels = tuple(getattr(model, "label_names", ()) or ())
    if 0 < len(labels) <= 4:
        parts.append("labels " + ", ".join(map(str, labels)))
    elif labels:
        parts.append(f"{len(labels)} labels")
    return escape(", ".join(parts))


def describe_slot(slot: ModelSlot) -> str:
    """One model family's line in the sidebar: what is loaded and from where, or why not."""
    title = escape(get_family(slot.family).title if slot.family else "model")
    note = f"<br>⏳ {escape(slot.training)}" if slot.training else ""
    if slot.model is None:
        return f"**{title}**: ⚠ {escape(slot.problem or 'no model yet')}{note}"
    summary = model_summary(slot.model)
    return (f"**{title}**" + (f" ({summary})" if summary else "") + note +
            f"<br><span style='font-size:85%;color:#666'>{escape(slot.where)}</span>")


def model_card(ctx: AppContext) -> pn.viewable.Viewable:
    """Every model family's slot, kept current as models appear, change or train."""
    rows = []
    for family in FAMILIES:
        slot = ctx.slot(family)
        rows.append(pn.pane.Markdown(
            pn.bind(lambda *_, s=slot: describe_slot(s), slot.param.model, slot.param.where,
                    slot.param.problem, slot.param.training),
            sizing_mode="stretch_width", margin=(2, 10), css_classes=[f"ss-model-{family}"]))
    if ctx.model_notes:
        rows.append(pn.pane.Markdown("⚠ Not used: " + "; ".join(map(escape, ctx.model_notes)),
                                     sizing_mode="stretch_width", margin=(2, 10)))
    return pn.Column(*rows, sizing_mode="stretch_width", css_classes=["ss-model"])


def missing_models(spec: ViewSpec, ctx: AppContext) -> str:
    """Why ``spec``'s view cannot work yet (Markdown), or '' when its models are there."""
    out = []
    for family in spec.needs:
        slot = ctx.slot(family)
        if slot.model is None:
            training = f"\n\n⏳ {escape(slot.training)}" if slot.training else ""
            out.append(f"### The {escape(spec.title)} view needs a "
                       f"{escape(get_family(family).title)}\n\n"
                       f"{escape(slot.problem or 'none is loaded')}{training}")
    return "\n\n".join(out)


def view_type(spec: ViewSpec) -> type | None:
    """The class a ``"module:Class"`` view spec builds (imported, not built); None for a
    ``make(session)`` callable, whose view is known only once built."""
    if callable(spec.make):
        return None
    module, _, attr = spec.make.partition(":")
    return getattr(importlib.import_module(module), attr, None)


def url_argument(name: str) -> str:
    """The value of ``?name=`` in the URL that opened this session ('' outside a server)."""
    try:
        values = (pn.state.session_args or {}).get(name) or []
    except (AttributeError, RuntimeError):  # no request behind this document
        return ""
    value = values[0] if values else b""
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


class SessionViews(Mapping):
    """One session's views by name, each built the first time it is asked for (a new page
    builds only the view of the tab it shows; the others cost nothing until opened)."""

    def __init__(self, specs: dict[str, ViewSpec], build):
        self._specs, self._build, self._views = specs, build, {}

    def __getitem__(self, name: str):
        if name not in self._views:
            if name not in self._specs:
                raise KeyError(name)
            self._views[name] = self._build(name)
        return self._views[name]

    def __iter__(self):
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name) -> bool:
        return name in self._specs

    @property
    def built(self) -> dict:
        """The views built so far (name → view), in tab order."""
        return {n: self._views[n] for n in self._specs if n in self._views}


class DashboardApp(param.Parameterized):
    """One session's page: sidebar (dataset, models, star) and one tab per registered view."""

    tab = param.String(default="", doc="name of the view shown (URL ?tab=NAME)")
    star = param.String(default="", doc="the focused store star (URL ?star=APOGEE_ID)")

    def __init__(self, store_path=None, models=None, **params):
        """``models``: model directories (a list, or an ``os.pathsep``-separated string)
        that take precedence for their family; default ``$STELLARSCOPE_MODELS``."""
        super().__init__(**params)
        data.warm_up()
        if isinstance(models, (list, tuple)):
            models = os.pathsep.join(map(str, models))
        ctx = self.context = data.make_context(store_path, models)
        session = self.session = Session(context=ctx)
        self.specs = {spec.name: spec for spec in registered()}
        #: built on first use: ``self.views[name]`` builds that view; ``.built`` lists them
        self.views = SessionViews(self.specs, self._build_view)
        self._showing: dict[str, str] = {}
        #: tabs the user has opened: their bodies stay filled, so going back is instant
        self._opened: set[str] = set()
        self.bodies = {name: pn.Column(sizing_mode="stretch_width", css_classes=[f"ss-tab-{name}"])
                       for name in self.specs}
        for name, spec in self.specs.items():
            self._fill_body(name)
            for family in spec.needs:
                ctx.slot(family).param.watch(lambda *_, n=name: self._fill_body(n),
                                             ["model", "problem", "training"])
        # not dynamic: a tab once opened stays rendered in the page (switching back is done by
        # the browser alone); a tab not yet opened has an empty body (_fill_body), so the first
        # page still builds only what its first tab shows
        self.tabs = pn.Tabs(*((spec.title, self.bodies[name]) for name, spec in self.specs.items()),
                            dynamic=False, sizing_mode="stretch_width")
        self.picker = StarPicker(session=session)
        focus = session.focus
        selected = pn.pane.Markdown(
            pn.bind(lambda *_: f"**Selected star:** {escape(focus.label)}" + (
                f"<br><span style='font-size:85%;color:#555'>{escape(ctx.status)}</span>"
                if ctx.status else ""), focus.param.spectrum, focus.param.source,
                focus.param.star_id, ctx.param.status),
            css_classes=["ss-selected-star"], sizing_mode="stretch_width")
        shortcuts = self._shortcuts()
        sidebar = [
            pn.pane.Markdown("### Dataset", margin=(0, 10)), dataset_card(ctx),
            pn.pane.Markdown("### Models", margin=(0, 10)), model_card(ctx),
            pn.pane.Markdown("### Star", margin=(0, 10)), selected,
            # the star picker (its upload box), the session and the list of keys come once
            # the page is shown: a new page's spectrum is drawn first
            deferred.slot(lambda: [
                self.picker,
                pn.pane.Markdown("### Session", margin=(0, 10)), self._session_card(),
                pn.pane.Markdown("### Keys", margin=(0, 10)), pn.pane.Markdown(
                    shortcuts.help_markdown(), css_classes=["ss-shortcuts"], margin=(0, 10),
                    styles={"font-size": "85%", "color": "#555"})],
                css_classes=["ss-sidebar-below"]),
            # the keys themselves work from the first moment (an invisible listener)
            shortcuts.listener,
        ]
        self.template = pn.template.FastListTemplate(
            title=TITLE + (" · mock survey" if ctx.is_mock else ""), sidebar=sidebar,
            main=[self.tabs], accent=ACCENT, sidebar_width=340, main_layout=None,
            header_background=ACCENT, theme_toggle=True, design=OfflineFast)
        self._last_message: tuple = ("", "", 0.0)
        self.messages: list[tuple[str, str]] = []  # (kind, text) as shown, for tests
        ctx.param.watch(self._notify, "message_count")
        self.tabs.param.watch(self._on_active, "active")
        self.param.watch(self._on_tab, "tab")
        served = pn.state.location is not None
        if served:
            self._refused_star, self._url_busy = "", False
            self.param.watch(self._on_url_star, "star")
            # the URL's star is focused before the first tab is built, which then draws it
            # once (the URL sync below finds it focused already)
            self.star = url_argument("star")
        self._show_first_tab()
        self._poll = None
        if served:
            # the URL follows the focused star (its value now: a refused one was reverted)
            focus.param.watch(lambda e: self._url_busy or setattr(self, "star", focus.star_id),
                              "star_id")
            pn.state.location.sync(self, {"star": "star"})
            # an old ?tab=2 arrives as a number, which the String param refuses: map it
            pn.state.location.sync(self, {"tab": "tab"},
                                   on_error=lambda mapped: self.show_tab(mapped.get("tab")))
        if pn.state.curdoc is not None:  # new or retrained weights appear without a reload
            self._poll = pn.state.add_periodic_callback(self._poll_models, period=MODEL_POLL_MS)
        data.session_opened(self)
        if session_doc() is not None:  # served: the process tidies up after the session
            # bound now: panel serve runs this file as a module per session and may have
            # dropped that module's globals by the time the session is destroyed
            closed = data.session_closed
            pn.state.on_session_destroyed(lambda _ctx: closed())
        if ctx.store is None and pn.state.curdoc is not None:
            pn.state.onload(lambda: ctx.notify(f"No dataset: {ctx.store_problem}", "error"))

    # -- the URL's star -------------------------------------------------------------------------
    def _on_url_star(self, event) -> None:
        """?star=ID opens that star.  The browser reports its URL after the page is built, so
        an unknown ID arrives twice: it is refused (one message) once, not on every report."""
        focus, wanted = self.session.focus, event.new.strip()
        if self._url_busy or wanted == focus.star_id or (wanted and wanted == self._refused_star):
            return
        self._url_busy = True
        try:
            focus.star_id = wanted  # the session opens it, or says why not and reverts
        finally:
            self._url_busy = False
        if focus.star_id not in (wanted, wanted.replace(" ", "+")):
            self._refused_star = wanted
        if self.star != focus.star_id:
            self.star = focus.star_id

    # -- tabs ---------------------------------------------------------------------------------
    def _build_view(self, name: str):
        view = self.specs[name].build(self.session)
        if isinstance(getattr(view, "on_open", None), list) and "star" in self.specs:
            view.on_open.append(lambda star: self.show_tab("star"))  # a star opened in a list
        if "active" in getattr(view, "param", ()):
            view.active = name == self.tab
        return view

    def _show_first_tab(self) -> None:
        """Show the tab the page was asked for (``DashboardApp(tab=…)``, else the URL's
        ``?tab=``, else the first view), building that tab alone: the URL's tab is read from
        the request here, before any view is built, not when the URL is synced later."""
        names = list(self.specs)
        first = (tab_name(self.tab, names) or tab_name(url_argument("tab"), names)
                 or next(iter(names), ""))
        if not first:
            return
        if self.tab != first:
            self.tab = first  # _on_tab shows it
        else:
            self.tabs.active = names.index(first)
            self._on_shown(first)

    def _fill_body(self, name: str) -> None:
        """The view, or, while a model it needs is missing, why it cannot work yet; nothing
        until the tab is first opened."""
        if name not in self._opened:
            return
        why = missing_models(self.specs[name], self.context)
        body = self.bodies[name]
        if why:
            body.objects = [pn.pane.Alert(why, alert_type="warning", sizing_mode="stretch_width",
                                          css_classes=["ss-view-needs-model"])]
            self._showing[name] = "note"
        elif self._showing.get(name) != "view":
            body.objects = [self.views[name]]
            self._showing[name] = "view"

    def show_tab(self, name) -> bool:
        """Show the view ``name`` (an old tab number works too); False if there is none."""
        found = tab_name(name, list(self.specs))
        if found is None:
            return False
        self.tab = found
        return True

    def _on_active(self, event) -> None:
        self.tab = list(self.specs)[event.new]

    def _on_tab(self, event) -> None:
        name = tab_name(event.new, list(self.specs))
        if name is None:  # an unknown ?tab= value: stay where we were
            self.tab = event.old if event.old in self.specs else next(iter(self.specs), "")
            return
        if name != event.new:  # an old tab number from a URL or bookmark
            self.tab = name
            return
        self.tabs.active = list(self.specs).index(name)
        self._on_shown(name)

    def _on_shown(self, name: str) -> None:
        if name not in self._opened:
            self._opened.add(name)
            self._fill_body(name)
        for other, view in self.views.built.items():
            if "active" in getattr(view, "param", ()):
                view.active = other == name
        view = self.views.built.get(name)  # None while a model it needs is missing
        if view is not None and hasattr(view, "ensure_built") and not getattr(view, "built", True):
            body = self.bodies[name]
            body.loading = True

            def build():
                try:
                    view.ensure_built()
                finally:
                    body.loading = False

            on_doc(session_doc(), build)

    # -- sidebar ------------------------------------------------------------------------------
    def _shortcuts(self) -> Shortcuts:
        session = self.session
        actions = {
            "n": ("next star", lambda: session.step_star(1)),
            "p": ("previous", lambda: session.step_star(-1)),
            "r": ("random star", session.random_star),
        }
        if self._fit_view():
            actions["f"] = ("fit", self._fit_key)
        for name, spec in self.specs.items():
            if spec.key:
                actions[spec.key] = ("tabs", lambda n=name: self.show_tab(n))
        self.shortcuts = Shortcuts(actions)
        return self.shortcuts

    def _fit_view(self) -> str:
        """The first view that fits a star (has ``fit()``), known from its class without
        building it; '' if none."""
        for name, spec in self.specs.items():
            kind = view_type(spec)
            if kind is None and name in self.views.built:
                kind = type(self.views[name])
            if callable(getattr(kind, "fit", None)):
                return name
        return ""

    def _fit_key(self) -> None:
        """Show the first view that fits, and fit the focused star with it."""
        name = self._fit_view()
        if not name:
            return
        self.show_tab(name)
        if missing_models(self.specs[name], self.context):
            return
        view = self.views[name]
        if not getattr(view, "busy", False):
            view.fit()

    def _session_card(self) -> pn.viewable.Viewable:
        """Download the session as JSON; restore one by uploading it."""
        save = pn.widgets.FileDownload(label="Save session", callback=self._session_bytes,
                                       filename="stellarscope-session.json", width=120,
                                       color="light", css_classes=["ss-session-save"])
        self.session_upload = pn.widgets.FileInput(accept=".json", multiple=False, width=170,
                                                   css_classes=["ss-session-restore"])
        self.session_upload.param.watch(self._on_session_file, "value")
        return pn.Column(pn.Row(save, self.session_upload), pn.pane.Markdown(
            "Save: star, tab, selection, view settings and the Fit mask as JSON. "
            "Restore: choose a saved file.",
            styles={"font-size": "85%", "color": "#555"}, margin=(0, 10)))

    def _session_bytes(self):
        return io.BytesIO(persist.dumps(persist.session_document(self)))

    def _on_session_file(self, event) -> None:
        if not event.new:
            return
        name = self.session_upload.filename or "session.json"
        try:
            doc = persist.read_session(event.new, name)
            persist.refuse_non_finite(doc, name)
            notes = persist.apply_session(self, doc, name)
        except StellarscopeError as exc:
            self.context.fail(exc)
            return
        if notes:
            self.context.notify(f"Session {name} restored, except: " + "; ".join(notes),
                                "warning")
        else:
            self.context.notify(f"Session {name} restored", "success")

    def user_text(self, text: str) -> str:
        """A message as the user sees it: an unknown star names the store by its title, not
        by the server's path (a remote user has no use for the server's file system; a
        damaged store's message keeps its path, which the person who fixes it needs)."""
        store = self.context.store
        if store is not None:
            where = f" in {store.path}"
            if text.startswith("unknown star ") and text.endswith(where):
                text = text[:-len(where)] + f" in the store '{store.title}'"
        return text

    def _notify(self, event) -> None:
        ctx = self.context
        if not ctx.message:
            return
        text = self.user_text(ctx.message)
        now = time.monotonic()
        # one event reaches the session along several paths (the URL, the param, a revert):
        # the same words within a moment are said once
        last = self._last_message
        self._last_message = (text, ctx.message_kind, now)
        if last[:2] == (text, ctx.message_kind) and now - last[2] < REPEAT_S:
            return
        self.messages.append((ctx.message_kind, text))
        area = pn.state.notifications
        if area is not None:
            # messages carry star IDs, file names and session content: never markup
            show = getattr(area, ctx.message_kind)
            duration = 8000 if ctx.message_kind == "error" else 4000
            # a message from building the page (an unknown ?star=) waits until it is shown
            pn.state.onload(lambda: show(escape(text), duration=duration))

    def _poll_models(self) -> None:
        """Models still training appear (and improve) as their weights are written."""
        had = {f: s.model is not None for f, s in self.context.slots.items()}
        for family in data.refresh_models(self.context):
            slot = self.context.slot(family)
            title = get_family(family).title
            if slot.model is not None:
                self.context.notify(f"The {title} was updated" if had.get(family) else
                                    f"A {title} is now available", "success")
            elif had.get(family):
                self.context.notify(f"The {title} is gone: {slot.problem}", "warning")


def error_page(exc: BaseException) -> pn.template.FastListTemplate:
    """The page a session gets when the app cannot be built: the reason, not a blank page."""
    text = escape(user_message(exc))
    alert = pn.pane.Alert(f"### Stellarscope could not start this page\n\n{text}\n\n"
                          "Fix the problem and reload the page.", alert_type="danger",
                          sizing_mode="stretch_width", css_classes=["ss-app-error"])
    if pn.state.curdoc is not None:
        pn.state.onload(lambda: pn.state.notifications is not None
                        and pn.state.notifications.error(text, duration=0))
    return pn.template.FastListTemplate(title=TITLE, main=[alert], accent=ACCENT,
                                        header_background=ACCENT, design=OfflineFast)


def serve_page() -> None:
    """Build this session's page into its document and mark it servable.  The document's
    model graph is recomputed once at the end, not once for each of the template's ~20 roots
    as they are added (that was a third of a new session's server time)."""
    page_resources.install()
    doc = pn.state.curdoc
    if doc is None:
        page().servable(title=TITLE)
        return
    with doc.models.freeze():
        page().servable(title=TITLE)


def page():
    """This session's page; a store or model that breaks under a running server gives a page
    that says what broke."""
    doc = pn.state.curdoc
    if doc is not None and "dist_url" not in doc._template_variables:
        # Panel resolves stylesheet URLs against this while the page is built and only sets it
        # when the HTML is rendered: before that, a sheet already pointed at this server can
        # be turned back to the CDN (an unstyled page offline), so point it here from the start
        doc._template_variables["dist_url"] = get_dist_path(cdn=False)
    try:
        return DashboardApp().template
    except Exception as exc:  # noqa: BLE001  (the page boundary: show it, whatever it is)
        logging.getLogger(__name__).exception("the Stellarscope page could not be built")
        return error_page(exc)


# the script's own name first: ``pn.state.served`` walks the stack with inspect (~0.2 s of CPU
# on every session, since panel serve runs this file once per session)
if __name__.startswith("bokeh_app") or pn.state.served:
    serve_page()
