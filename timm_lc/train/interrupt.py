"""Ctrl-C during training: the first SIGINT is held until the current step is done, the second acts at once.

A ``KeyboardInterrupt`` raised at an arbitrary bytecode can land in a finaliser, a callback or the middle
of a checkpoint, where it is swallowed ("Exception ignored in ...") or leaves a half-written state.
``DeferredInterrupt`` replaces Python's SIGINT handler while the training loop runs: the first
SIGINT only records the request, and the loop calls ``check()`` where stopping is safe (after a
step, its sleep and its checkpoint), which raises ``KeyboardInterrupt`` there. A second SIGINT
raises at once. The handler is only replaced when Python's default one is installed, in the main
thread: a SIGINT that the launching shell ignores (``cmd &`` in a script) stays ignored.
"""
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Optional, Type

__all__ = ["DeferredInterrupt"]


class DeferredInterrupt:
    """Holds a SIGINT until the next ``check()`` between ``install()`` and ``restore()`` (or in a ``with``).

    Attributes:
        requested: Whether a SIGINT arrived while the handler was installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        """Takes over SIGINT if Python's default handler has it and this is the main thread."""
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def restore(self) -> None:
        """Gives SIGINT back to the handler ``install()`` replaced (a held request stays ``requested``)."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def __enter__(self) -> "DeferredInterrupt":
        self.install()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.restore()

    def check(self) -> None:
        """Raises the held interrupt, if any.

        Raises:
            KeyboardInterrupt: A SIGINT arrived since the handler was installed.
        """
        if self.requested:
            raise KeyboardInterrupt
