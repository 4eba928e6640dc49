"""Keyboard shortcuts for the whole page, with the list shown to the user.

A small browser component listens to key presses on the page (not while typing in a text
field) and sends each key to Python, where it is looked up in a table of actions.
"""

from __future__ import annotations

from collections.abc import Callable

import panel as pn
import param


class KeyListener(pn.custom.JSComponent):
    """Reports every plain key press outside text fields as ``key`` (``presses`` counts)."""

    key = param.String(default="")
    presses = param.Integer(default=0)

    _esm = """
    export function render({ model }) {
      const typing = (e) => {
        const el = e.composedPath()[0];
        const tag = (el && el.tagName) || "";
        return ["INPUT", "TEXTAREA", "SELECT"].includes(tag) || (el && el.isContentEditable);
      };
      const handler = (e) => {
        if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) { return; }
        model.key = e.key;
        model.presses = model.presses + 1;
      };
      document.addEventListener("keydown", handler);
      model.on("remove", () => document.removeEventListener("keydown", handler));
      const span = document.createElement("span");
      span.className = "ss-keys-ready";
      return span;
    }
    """


class Shortcuts(pn.viewable.Viewer):
    """Keys → actions; ``press(key)`` runs one (the browser calls it through the listener)."""

    def __init__(self, actions: dict[str, tuple[str, Callable[[], object]]], **params):
        super().__init__(**params)
        self.actions = dict(actions)
        self.listener = KeyListener(height=0, width=0, margin=0)
        self.listener.param.watch(self._on_presses, "presses")

    def _on_presses(self, event) -> None:
        # quick repeats of one key can reach the server as one update: replay each press
        for _ in range(max(1, min(event.new - event.old, 20))):
            self.press(self.listener.key)

    def press(self, key: str) -> bool:
        """Run the action bound to ``key``; False when the key means nothing here."""
        action = self.actions.get(key)
        if action is None:
            return False
        action[1]()
        return True

    def help_markdown(self) -> str:
        keys: dict[str, list[str]] = {}
        for key, (label, _) in self.actions.items():
            keys.setdefault(label, []).append(key)
        return " · ".join(f"<kbd>{'</kbd>/<kbd>'.join(k)}</kbd> {label}"
                          for label, k in keys.items())

    def __panel__(self):
        return pn.Column(self.listener, pn.pane.Markdown(
            self.help_markdown(), css_classes=["ss-shortcuts"], margin=(0, 10),
            styles={"font-size": "85%", "color": "#555"}), margin=0)
