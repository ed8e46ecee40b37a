"""Run many Ray tasks and stream their results back as they finish.

A bounded window of tasks is in flight (the driver never holds more than ``window`` unfetched results), a progress
bar counts finished units, and errors come back as they would locally: a user error raised in a task is the same
one-line :class:`EdgeFusionError`; a task whose worker died on every try (Ray retries it on another worker first)
is a one-line error naming the unit. Interrupting the driver cancels what is still in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from edgefusion.errors import EdgeFusionError

TASK_RETRIES = 3  # tries after a worker dies mid-task (SIGKILL, out of memory, lost node)


def _fetch(ray, ref, what: str):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:  # raised by our code inside the task
        cause = getattr(err, "cause", None)
        if isinstance(cause, EdgeFusionError):
            raise EdgeFusionError(str(cause)) from None
        raise RuntimeError(f"{what} failed on a Ray worker:\n{err}") from None
    except ray.exceptions.RayError as err:  # worker or node lost on every try, task cancelled, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise EdgeFusionError(f"{what} was lost after {TASK_RETRIES + 1} tries on Ray workers ({type(err).__name__}: "
                              f"{first})", "check the workers' memory (`ray status`) and run again") from None


def stream_tasks(ray, submit: Callable[[int], object], count: int, window: int, desc: str = "tasks",
                 progress: bool = True, weight: Callable[[int], int] | None = None,
                 total: int | None = None) -> Iterator[tuple[int, object]]:
    """Yield ``(i, result)`` for ``i`` in ``range(count)`` in the order the tasks finish.

    ``submit(i)`` starts unit ``i`` and returns its ObjectRef; at most ``window`` units are in flight. The bar
    advances by ``weight(i)`` per finished unit (default 1) towards ``total`` (default ``count``).
    """
    from tqdm.auto import tqdm

    pending: dict = {}
    nxt = 0
    bar = tqdm(total=total if total is not None else count, desc=desc, disable=not progress)
    try:
        while nxt < count or pending:
            while nxt < count and len(pending) < max(1, window):
                pending[submit(nxt)] = nxt
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                value = _fetch(ray, ref, f"{desc}: unit {i}")
                bar.update(weight(i) if weight else 1)
                yield i, value
    except BaseException:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        raise
    finally:
        bar.close()


class InOrder:
    """Hands results on in unit order (0, 1, 2, ...) whatever order they arrive in, so sums over them are formed
    in the same order as a local run's and do not depend on scheduling."""

    def __init__(self):
        self.next = 0
        self._held: dict[int, object] = {}

    def push(self, i: int, value) -> list:
        """Store unit ``i``; return the values that are now next in order."""
        self._held[i] = value
        out = []
        while self.next in self._held:
            out.append(self._held.pop(self.next))
            self.next += 1
        return out
