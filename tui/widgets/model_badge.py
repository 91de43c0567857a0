"""One line naming the loaded model and its state; it follows the app's `model_state`."""

from __future__ import annotations

from textual.widgets import Static


class ModelBadge(Static):
    DEFAULT_CSS = """
    ModelBadge { width: auto; height: 1; padding: 0 1; background: $panel; }
    ModelBadge.loading { background: $warning 40%; }
    ModelBadge.failed { background: $error 40%; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "model_state", self._show, init=True)

    def _show(self, state: str) -> None:
        name = getattr(self.app, "model_label", "") or "no model"
        text = {"loading": f"loading {name}…", "failed": f"{name}: failed to load", "none": "no model loaded"}
        self.update(text.get(state, name))
        self.set_class(state == "loading", "loading")
        self.set_class(state == "failed", "failed")
