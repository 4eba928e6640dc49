"""The Stellarscope dashboard: ``panel serve dashboard/app.py`` or ``stellarscope serve``.

The store comes from ``$STELLARSCOPE_STORE`` (else the demo store under
``$STELLARSCOPE_HOME``), the VAE from ``$STELLARSCOPE_VAE`` (else the demo weights).  Each
browser session builds its own state and views; stores and models are shared, cached.
"""

from __future__ import annotations

import html
import importlib
import io

import panel as pn

from dashboard import data
from dashboard.jobs import on_doc, session_doc
from dashboard.shortcuts import Shortcuts
from dashboard.state import AppContext, Session
from dashboard.views.attention import AttentionPlaceholder
from dashboard.views.catalog import CatalogView
from dashboard.views.latent import LatentView
from dashboard.views.star import StarView
from dashboard.views.upload import StarPicker

TITLE = "Stellarscope"
ACCENT = "#1f4e79"
MODEL_POLL_MS = 15_000
LATENT_TAB = 1  # decodes only while shown
CATALOG_TAB = 2  # position of the Catalog tab, whose corner plot is built on first visit
FIT_TAB = 3


def _notify_exception(exc: BaseException) -> None:
    """Any error escaping a callback becomes a notification, never a traceback on the page."""
    if pn.state.notifications is not None:
        pn.state.notifications.error(f"{type(exc).__name__}: {exc}", duration=10_000)


pn.extension("tabulator", "filedropper", notifications=True, loading_indicator=True,
             exception_handler=_notify_exception, disconnect_notification=(
                 "Connection to the Stellarscope server lost; reload the page."))


def fit_view(session: Session):
    """The emulator Fit view when its module is installed, else an honest note."""
    try:
        module = importlib.import_module("dashboard.views.fit")
    except ModuleNotFoundError as exc:
        if exc.name != "dashboard.views.fit":
            raise
        return pn.pane.Alert("### The Fit view is not installed yet\n\nFitting stellar labels "
                             "with the neural emulator arrives with its own issue.",
                             alert_type="secondary", sizing_mode="stretch_width")
    return module.FitView(focus=session.focus, context=session.context,
                          selection=session.selection)


def dataset_card(ctx: AppContext) -> pn.viewable.Viewable:
    store = ctx.store
    if store is None:
        return pn.pane.Alert(f"**No dataset.** {ctx.store_problem}", alert_type="danger")
    badge = ""
    if store.is_mock:
        badge = ('<div class="ss-mock-badge" style="background:#ffb74d;color:#3e2200;'
                 'font-weight:700;padding:6px 10px;border-radius:6px;margin-bottom:6px;'
                 'letter-spacing:0.04em">MOCK SURVEY: synthetic spectra with known true '
                 'labels</div>')
    text = (f"{badge}<b>{html.escape(store.title)}</b> ({html.escape(store.kind)})<br>"
            f"{len(store):,} stars on the {store.grid.name} grid "
            f"({store.grid.n_pix} px)<br><span style='font-size:85%;color:#666'>"
            f"{html.escape(str(store.path))}</span>")
    return pn.pane.HTML(text, sizing_mode="stretch_width", css_classes=["ss-dataset"])


def model_card(ctx: AppContext) -> pn.viewable.Viewable:
    def describe(vae, problem, where, training):
        note = f"<br>⏳ {html.escape(training)}" if training else ""
        if vae is None:
            return f"⚠ {problem}{note}"
        return (f"**VAE** with {vae.n_latent} latents, labels "
                f"{', '.join(vae.label_names)}{note}<br><span style='font-size:85%;"
                f"color:#666'>{html.escape(where)}</span>")
    return pn.pane.Markdown(pn.bind(describe, ctx.param.vae, ctx.param.vae_problem,
                                    ctx.param.vae_dir, ctx.param.vae_training),
                            sizing_mode="stretch_width", css_classes=["ss-model"])


class DashboardApp:
    """One session's page: sidebar (dataset, model, star) and the view tabs."""

    def __init__(self, store_path=None, vae_dir=None):
        data.warm_up()
        ctx = self.context = data.make_context(store_path, vae_dir)
        session = self.session = Session(context=ctx)
        focus = session.focus
        self.star_view = StarView(focus=focus, context=ctx)
        self.latent_view = LatentView(focus=focus, context=ctx, active=False)
        self.catalog_view = CatalogView(focus=focus, selection=session.selection, context=ctx)
        self.picker = StarPicker(session=session)
        self.fit_view = fit_view(session)
        self.views = {"star": self.star_view, "latent": self.latent_view,
                      "catalog": self.catalog_view, "fit": self.fit_view}
        self.tabs = pn.Tabs(("Star", self.star_view), ("Latent space", self.latent_view),
                            ("Catalog", self.catalog_view), ("Fit", self.fit_view),
                            ("Attention", AttentionPlaceholder()), dynamic=True,
                            sizing_mode="stretch_width")
        selected = pn.pane.Markdown(
            pn.bind(lambda *_: f"**Selected star:** {focus.label}" + (
                f"<br><span style='font-size:85%;color:#555'>{html.escape(ctx.status)}</span>"
                if ctx.status else ""), focus.param.spectrum, focus.param.source,
                focus.param.star_id, ctx.param.status),
            css_classes=["ss-selected-star"], sizing_mode="stretch_width")
        sidebar = [
            pn.pane.Markdown("### Dataset", margin=(0, 10)), dataset_card(ctx),
            pn.pane.Markdown("### Model", margin=(0, 10)), model_card(ctx),
            pn.pane.Markdown("### Star", margin=(0, 10)), selected, self.picker,
            pn.pane.Markdown("### Session", margin=(0, 10)), self._session_card(),
            pn.pane.Markdown("### Keys", margin=(0, 10)), self._shortcuts(),
        ]
        self.template = pn.template.FastListTemplate(
            title=TITLE + (" · mock survey" if ctx.is_mock else ""), sidebar=sidebar,
            main=[self.tabs], accent=ACCENT, sidebar_width=340, main_layout=None,
            header_background=ACCENT, theme_toggle=True)
        ctx.param.watch(self._notify, "message_count")
        self.tabs.param.watch(self._on_tab, "active")
        self._vae_dir = vae_dir
        self._poll = None
        if pn.state.location is not None:
            pn.state.location.sync(focus, {"star_id": "star"})
            pn.state.location.sync(self.tabs, {"active": "tab"})
        if pn.state.curdoc is not None:  # new or retrained weights appear without a reload
            self._poll = pn.state.add_periodic_callback(self._poll_models, period=MODEL_POLL_MS)

    def _shortcuts(self) -> Shortcuts:
        session = self.session
        actions = {
            "n": ("next star", lambda: session.step_star(1)),
            "p": ("previous", lambda: session.step_star(-1)),
            "r": ("random star", session.random_star),
            "f": ("fit", self._fit_key),
        }
        for i in range(len(self.tabs)):
            actions[str(i + 1)] = ("tabs", lambda i=i: setattr(self.tabs, "active", i))
        self.shortcuts = Shortcuts(actions)
        return self.shortcuts

    def _fit_key(self) -> None:
        """Show the Fit tab and fit the focused star."""
        self.tabs.active = FIT_TAB
        if hasattr(self.fit_view, "fit") and not getattr(self.fit_view, "busy", False):
            self.fit_view.fit()

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
        from dashboard import persist

        return io.BytesIO(persist.dumps(persist.session_document(self)))

    def _on_session_file(self, event) -> None:
        from core.errors import StellarscopeError
        from dashboard import persist

        if not event.new:
            return
        name = self.session_upload.filename or "session.json"
        try:
            notes = persist.apply_session(self, persist.read_session(event.new, name), name)
        except StellarscopeError as exc:
            self.context.fail(exc)
            return
        if notes:
            self.context.notify(f"Session {name} restored, except: " + "; ".join(notes),
                                "warning")
        else:
            self.context.notify(f"Session {name} restored", "success")

    def _on_tab(self, event) -> None:
        self.latent_view.active = event.new == LATENT_TAB
        if event.new == CATALOG_TAB and not self.catalog_view.built:
            self.catalog_view.corner_pane.loading = True
            on_doc(session_doc(), self.catalog_view.ensure_built)

    def _notify(self, event) -> None:
        ctx = self.context
        if pn.state.notifications is not None and ctx.message:
            getattr(pn.state.notifications, ctx.message_kind)(
                ctx.message, duration=8000 if ctx.message_kind == "error" else 4000)

    def _poll_models(self) -> None:
        """Models still training appear (and improve) as their weights are written."""
        had = self.context.vae is not None
        if data.refresh_vae(self.context, self._vae_dir) and self.context.vae is not None:
            self.context.notify("The VAE model was updated" if had else
                                "A VAE model is now available", "success")


if pn.state.served or __name__.startswith("bokeh_app"):
    DashboardApp().template.servable(title=TITLE)
