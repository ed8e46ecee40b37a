"""Warnings of one run, and ``--strict``: every warning becomes a one-line error.

A warning is something the run can continue past but the user should know (a policy rule that matches no layer,
a prompt cut by the tokenizer, a fidelity figure below expectation). :func:`warn` prints it at once on stderr and
records it in the innermost :func:`session`; the verb copies :func:`recorded` into its output (the export's
manifest). Under ``session(strict=True)`` :func:`warn` raises :class:`EdgeFusionError` instead.

The setting crosses process boundaries: :func:`edgefusion.isolated.run_isolated` starts each child in the
parent's mode and hands the warnings the child recorded back to the parent's session.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from edgefusion.errors import EdgeFusionError, plain_text


@dataclass
class _Session:
    strict: bool = False
    warnings: list[str] = field(default_factory=list)


_stack: list[_Session] = []


@contextmanager
def session(strict: bool = False):
    """Collect the warnings raised inside the block; ``strict``: raise them as errors."""
    s = _Session(strict)
    _stack.append(s)
    try:
        yield s
    finally:
        _stack.remove(s)


def strict() -> bool:
    """Whether the innermost session turns warnings into errors."""
    return bool(_stack) and _stack[-1].strict


def recorded() -> list[str]:
    """The warnings recorded by the innermost session (a copy)."""
    return list(_stack[-1].warnings) if _stack else []


def warn(problem: str, fix: str | None = None, echo: bool = True) -> str:
    """Report a warning: an :class:`EdgeFusionError` under strict mode, else printed (``echo``) and recorded."""
    if strict():
        raise EdgeFusionError(f"{problem} (an error under --strict)", fix)
    text = plain_text(problem if not fix else f"{problem}; {fix}")
    if _stack:
        _stack[-1].warnings.append(text)
    if echo:
        print(f"edgefusion: warning: {text}", file=sys.stderr, flush=True)
    return text


def adopt(warnings: list[str]) -> None:
    """Record warnings another process already printed (a child's, handed back by ``run_isolated``)."""
    if _stack:
        _stack[-1].warnings.extend(w for w in warnings if w not in _stack[-1].warnings)
