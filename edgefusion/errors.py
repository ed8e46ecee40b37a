"""The one exception type users see: a one-line message that names the problem and the fix."""

import re

# CSI sequences (colours, cursor moves) and other two-byte escapes: third-party messages (diffusers, transformers,
# rich tracebacks) may carry them, and our messages are plain text on any terminal, log file or CI page
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def plain_text(text: str) -> str:
    """``text`` without ANSI escape sequences or other control characters, whitespace runs collapsed to one space."""
    text = _ANSI.sub("", str(text))
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class EdgeFusionError(Exception):
    """A user-facing error. ``str(err)`` is a single line: what is wrong, then what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        text = problem if not fix else f"{problem}; {fix}"
        super().__init__(plain_text(text))
