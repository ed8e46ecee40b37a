"""SIGTERM and SIGHUP (``timeout``, ``kill``, a closed terminal, a CI runner cancelling a job) end a command the way
Ctrl-C does: as an exception, so every ``finally`` runs, staging folders are removed and children are stopped."""

from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """A termination signal, raised in the main thread like Ctrl-C's ``KeyboardInterrupt``."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


def _raise(signum, frame) -> None:
    for sig in SIGNALS:  # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Interrupted` (call once, from the main thread of a command)."""
    for sig in SIGNALS:
        signal.signal(sig, _raise)


def exit_status(err: KeyboardInterrupt) -> int:
    """The shell's status for a command ended by this signal: 128 + signal number (130 for Ctrl-C)."""
    return 128 + getattr(err, "signum", signal.SIGINT)
