"""SIGINT and SIGTERM as a request to stop between training steps.

Inside :func:`stop_requests` the first SIGINT or SIGTERM only sets a flag;
the training loop looks at it between steps (:meth:`StopRequest.check`),
so the step, and a checkpoint being written, finish first, and no exception
is raised at an arbitrary point (where Python may swallow it, e.g. inside a
weakref callback).  A second signal acts as if bntrain did not handle it
(SIGINT: KeyboardInterrupt at once; SIGTERM: the process ends).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import Interrupted

__all__ = ["StopRequest", "stop_requests"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self, message: Callable[[str], str]) -> None:
        """Raise :class:`~bntrain.errors.Interrupted` if a signal arrived.

        ``message(signal_name)`` builds the error's text (called only then).
        """
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            raise Interrupted(message(name), self.signum)


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turn SIGINT and SIGTERM into a :class:`StopRequest` while the block runs.

    Off the main thread (where Python cannot set handlers) the request is
    never set and signals keep their usual effect.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def handler(signum, frame):
        if stop.signum is None:
            stop.signum = signum
            return
        signal.signal(signum, previous[signum] or signal.SIG_DFL)  # the second one: as usual
        signal.raise_signal(signum)

    for sig in _SIGNALS:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
