"""One thread that runs every model call of the demo, with request coalescing per channel.

The network is not thread-safe to share and a CPU has no spare cores to run two forward passes at once, so all model
work goes through :class:`ModelWorker`. Each request names a *channel* ("paint", "sample"); a request that arrives
while an older one of the same channel is still waiting replaces it (the older one is answered with
:class:`Superseded` and never computed), so after a burst of strokes only the newest label map is rendered.
A request that has started always finishes.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable


class Superseded(Exception):
    """The request was replaced by a newer one of its channel before it started; nothing was computed."""


class ModelWorker:
    """Runs submitted callables one at a time on a single daemon thread; newest-wins per channel."""

    def __init__(self, name: str = "asap-demo-model") -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[Callable[[], Any], Future]] = {}  # channel -> waiting job (insertion order)
        self._closed = False
        self.computed = 0       # jobs run (for tests and logs)
        self.superseded = 0     # jobs replaced before they started
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, channel: str, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` on ``channel``; a job of that channel still waiting is dropped (its future: Superseded)."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model worker is closed")
            old = self._pending.pop(channel, None)
            if old is not None:
                self.superseded += 1
                old[1].set_exception(Superseded(f"replaced by a newer {channel} request"))
            self._pending[channel] = (fn, future)
            self._cond.notify()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Drop waiting jobs, let a running one finish, and stop the thread."""
        with self._cond:
            self._closed = True
            for _, future in self._pending.values():
                future.set_exception(Superseded("the server is shutting down"))
            self._pending.clear()
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                channel = next(iter(self._pending))  # oldest channel first, so no channel starves another
                fn, future = self._pending.pop(channel)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:  # handed to the waiting request; the worker goes on
                future.set_exception(e)
            else:
                future.set_result(result)
            finally:
                self.computed += 1
