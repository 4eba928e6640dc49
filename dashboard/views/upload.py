"""Ways to pick the focused star: APOGEE_ID search, a random star, and FITS upload.

The search box completes on the server (a prefix search over sorted IDs), so even a
700k-star catalog sends only a handful of suggestions to the browser.  Uploads are parsed by
``core.io.read_spectrum`` and encoded in a worker thread; a bad file is reported with the
reader's own message, naming the uploaded file.
"""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path

import panel as pn
import param

from core.errors import BadFileError, StellarscopeError
from core.spectrum import Spectrum

from .. import data
from ..jobs import JobRunner
from ..state import Session

MAX_UPLOAD_MB = 50
#: The "Random star" icon, drawn inline: a named icon would be a webfont from a public CDN.
DICE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="18" height="18" '
            'class="ss-dice" fill="none" stroke="currentColor" stroke-width="2">'
            '<rect x="3.5" y="3.5" width="17" height="17" rx="3.5"/>'
            '<g fill="currentColor" stroke="none"><circle cx="8.2" cy="8.2" r="1.6"/>'
            '<circle cx="15.8" cy="8.2" r="1.6"/><circle cx="12" cy="12" r="1.6"/>'
            '<circle cx="8.2" cy="15.8" r="1.6"/><circle cx="15.8" cy="15.8" r="1.6"/></g></svg>')
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


def read_upload(name: str, payload: bytes) -> Spectrum:
    """Parse uploaded bytes with core.io; errors name the uploaded file, not a temp path."""
    from core.io import read_spectrum

    if len(payload) > MAX_UPLOAD_MB * 1024 * 1024:
        raise BadFileError(name, f"is {len(payload) / 2**20:.1f} MB; the limit is "
                                 f"{MAX_UPLOAD_MB} MB")
    if not payload:
        raise BadFileError(name, "is empty")
    if not name.lower().endswith(FITS_SUFFIXES):
        raise BadFileError(name, "is not a FITS file (expected an apStar, aspcapStar or apVisit "
                                 "file ending in .fits or .fits.gz)")
    safe = "".join(c if c.isalnum() or c in "._-+" else "_" for c in Path(name).name) or "upload"
    with tempfile.TemporaryDirectory(prefix="stellarscope-upload-") as tmp:
        path = Path(tmp) / safe
        path.write_bytes(payload)
        try:
            spectrum = read_spectrum(path)
        except BadFileError as exc:
            raise BadFileError(name, exc.problem) from None
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            # a reader tripping over a malformed file: still the user's file, not our crash
            raise BadFileError(name, f"could not be read as an APOGEE spectrum ({exc})") from None
        from core.inference.attention import with_own_pixels
        from core.preprocess.policy import prepare_file_spectrum

        # core's one policy for files, so `stellarscope fit --file` repeats the view's fit
        # exactly; an apVisit also keeps its own rest-frame pixels (read while the file exists)
        return with_own_pixels(prepare_file_spectrum(spectrum, source=name), path, source=name)


class StarPicker(pn.viewable.Viewer):
    """Sidebar controls that choose the focused star."""

    session = param.ClassSelector(class_=Session)

    def __init__(self, **params):
        super().__init__(**params)
        ctx = self.session.context
        self._ids = data.id_index(ctx.store) if ctx.store is not None else None
        self.search = pn.widgets.AutocompleteInput(
            label="Find a star (APOGEE_ID)", placeholder="type part of an APOGEE_ID",
            options=self._ids.search("2M", 20) if self._ids else [], min_characters=2,
            search_strategy="includes", case_sensitive=False, restrict=False,
            sizing_mode="stretch_width", css_classes=["ss-star-search"])
        self.random_button = pn.widgets.Button(label="Random star", color="primary",
                                               icon=DICE_SVG, sizing_mode="stretch_width",
                                               css_classes=["ss-random-star"])
        # no browser-side type filter: browsers give FITS files no MIME type, so the upload
        # widget would refuse them; the name and content are checked on the server instead
        self.upload = self._dropper()
        self.upload_box = pn.Column(self.upload, sizing_mode="stretch_width", margin=0)
        self.upload_status = pn.pane.Markdown(
            f"apStar, aspcapStar or apVisit FITS, up to {MAX_UPLOAD_MB} MB.",
            css_classes=["ss-upload-status"], margin=(0, 10))
        self.runner = JobRunner()
        self.search.param.watch(self._on_typing, "value_input")
        self.search.param.watch(self._on_search, "value")
        self.random_button.on_click(lambda e: self.session.random_star())
        self.session.focus.param.watch(self._on_focus, "star_id")
        self.random_button.disabled = ctx.store is None

    def _dropper(self) -> pn.widgets.FileDropper:
        dropper = pn.widgets.FileDropper(max_file_size=f"{MAX_UPLOAD_MB}MB", multiple=False,
                                         sizing_mode="stretch_width", height=110,
                                         css_classes=["ss-upload"])
        dropper.param.watch(self._on_upload, "value")
        return dropper

    def _on_typing(self, event) -> None:
        if self._ids is not None and event.new and len(event.new.strip()) >= 2:
            self.search.options = self._ids.search(event.new, 25)

    def _on_search(self, event) -> None:
        star = (event.new or "").strip()
        if star:
            self.session.select_star(star)

    def _on_focus(self, event) -> None:
        # only a star that stayed focused: an unknown one (reverted) is not searched again
        if event.new and event.new == self.session.focus.star_id != self.search.value:
            self.search.param.update(value=event.new)
        elif not event.new and self.search.value:
            # an upload (no store star) is on screen: the box no longer names the star before
            self.search.param.update(value="")

    # -- upload -----------------------------------------------------------------------------
    def _on_upload(self, event) -> None:
        files = event.new or {}
        if not files:
            return
        # a single-file dropper holds just the latest file (the widget updates its dict in
        # place, so event.old cannot tell what changed)
        name = list(files)[-1]
        payload = files[name]
        if isinstance(payload, str):
            payload = payload.encode("latin-1")
        self.upload_status.object = f"Reading **{html.escape(name)}** …"
        self.upload.loading = True
        self.runner.submit(self._parse_and_encode, name, payload, key="upload",
                           on_done=self._show_upload, on_error=self._upload_failed)

    def _parse_and_encode(self, name: str, payload: bytes):
        spectrum = read_upload(name, payload)
        return name, spectrum, self.session.model_outputs(spectrum)

    def _show_upload(self, result) -> None:
        name, spectrum, extras = result
        self.upload.loading = False
        self.session.show(spectrum, source="upload", **extras)
        encoded = "encoded by the VAE" if extras["encoding"] is not None else "not encoded"
        note = spectrum.meta.get("NOTE")
        # the file name and the header's star name are the uploader's text: never markup
        self.upload_status.object = html.escape(
            f"Showing {name} ({spectrum.label}, {spectrum.n_pix} pixels, {encoded})."
            + (f" {note}." if note else ""))
        self.session.context.notify(f"Loaded {name}", "success")

    def _upload_failed(self, exc: BaseException) -> None:
        self.upload.loading = False
        if isinstance(exc, StellarscopeError):
            msg = str(exc)
        else:  # not our words: named, with the details in the server's log
            logging.getLogger(__name__).error("upload failed", exc_info=exc)
            msg = "the file could not be read; the server's log has the details"
        # the dropper itself says "Upload complete" once the bytes arrived: a fresh one
        # replaces it, so nothing on the page calls a rejected file complete
        self.upload = self._dropper()
        self.upload_box.objects = [self.upload]
        self.upload_status.object = (f"<span class='ss-upload-rejected' style='color:#b00020'>"
                                     f"⚠ Not loaded: {html.escape(msg)}</span>")
        self.session.context.fail(f"Upload rejected: {msg}")

    def __panel__(self):
        return pn.Column(
            self.search, self.random_button,
            pn.pane.Markdown("**Upload a spectrum**", margin=(10, 10, 0, 10)),
            self.upload_box, self.upload_status, sizing_mode="stretch_width")
