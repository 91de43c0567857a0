"""The one model the TUI keeps loaded: shared by every screen, one job on it at a time.

Loading and jobs run in worker threads; the lock makes a load wait for the job in flight, and a second
job is refused (not queued) so the person sees at once that the model is busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bayling_local.backends.base import LoadOptions
from bayling_local.errors import BaylingError
from bayling_local.model import Model, open_model, resolve_model


class ModelBusyError(BaylingError):
    """Another job (an answer, a translation, a benchmark) is using the model."""


class NoModelError(BaylingError):
    """No model is loaded (still loading, or the last load failed)."""


class ModelSlot:
    def __init__(self, options: LoadOptions | None = None, loaded: Model | None = None):
        self.options = options or LoadOptions()
        self.model = loaded
        self._owned = loaded is None  # a model handed in by the caller is theirs to close
        self._lock = threading.Lock()
        self._job: str | None = None
        self._cancel: threading.Event | None = None

    @property
    def name(self) -> str | None:
        return self.model.name if self.model else None

    def load(self, name: str | None) -> Model:
        """Make `name` (a store name or path; None: the default) the loaded model.

        Waits for the job in flight. The previous model is closed first, so two never share memory.
        """
        with self._lock:
            return self._swap(name)

    def _swap(self, name: str | None) -> Model:
        """`load` for a caller that holds the lock."""
        if self.model is not None and self.model.name == resolve_model(name).name:
            return self.model
        self._release_model()
        self.model = open_model(name, options=self.options)
        self._owned = True
        return self.model

    @contextmanager
    def use(self, job: str, cancel: threading.Event | None = None) -> Iterator[Model]:
        """The loaded model for one job; raises ModelBusyError while another job holds it."""
        if not self._lock.acquire(blocking=False):
            raise ModelBusyError(f"the model is busy ({self._job or 'loading'}); wait, or press Esc there to stop it")
        try:
            if self.model is None:
                raise NoModelError("no model is loaded; choose one with ctrl+o (chat) or on the Models screen (F4)")
            self._job, self._cancel = job, cancel
            yield self.model
        finally:
            self._job, self._cancel = None, None
            self._lock.release()

    @contextmanager
    def exclusive(self, job: str, cancel: threading.Event | None = None) -> Iterator[Callable[[str | None], Model]]:
        """Hold the slot for a job that runs on several models in turn (benchmarks).

        Yields a loader that swaps the slot's model, so the models load one at a time.
        """
        if not self._lock.acquire(blocking=False):
            raise ModelBusyError(f"the model is busy ({self._job or 'loading'}); wait, or press Esc there to stop it")
        try:
            self._job, self._cancel = job, cancel
            yield self._swap
        finally:
            self._job, self._cancel = None, None
            self._lock.release()

    def cancel_job(self) -> None:
        """Ask the job in flight (if any) to stop."""
        if self._cancel is not None:
            self._cancel.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the job in flight and free the model (when it is ours)."""
        self.cancel_job()
        if self._lock.acquire(timeout=timeout):
            try:
                self._release_model()
            finally:
                self._lock.release()

    def _release_model(self) -> None:
        if self.model is not None and self._owned:
            self.model.close()
        self.model = None
