"""What the running server holds: the model once loaded, its engine, and the request admission.

The model loads on a thread after the server starts listening, so `/health` answers 503 while it loads
and a supervisor can tell "loading" from "down".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bayling_local.serve.errors import ApiError, unknown_model
from bayling_local.serve.limits import Admission


@dataclass
class ServerState:
    served_name: str | None
    """The id `/v1/models` lists and requests name; None takes the model's own name once loaded."""
    admission: Admission
    model: object | None = None
    engine: object | None = None
    load_error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    _loaded: threading.Event = field(default_factory=threading.Event)

    def load_in_background(self, load: Callable[[], tuple[object, object]]) -> threading.Thread:
        """Run `load` (returning model and engine) on a thread; `/health` turns 200 when it is done."""
        thread = threading.Thread(target=self._load, args=(load,), name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self, load) -> None:
        try:
            self.model, self.engine = load()
            self.served_name = self.served_name or self.model.name
        except Exception as error:  # reported by /health and every route, as one line
            self.load_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        return self.engine is not None

    def require_model(self, name: str | None):
        """The loaded model, if `name` (when given) is the one served; else 503 or 404."""
        if self.load_error is not None:
            raise ApiError(503, f"the model failed to load: {self.load_error}", type="server_error")
        if not self.ready:
            raise ApiError(503, "the model is loading; retry shortly", type="unavailable_error", code="loading",
                           headers={"Retry-After": "1"})
        if name and name != self.served_name:
            raise unknown_model(name, self.served_name)
        return self.model

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
