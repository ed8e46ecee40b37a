"""The one exception type users see: a one-line message that names the problem and the fix."""


class EdgeFusionError(Exception):
    """A user-facing error. ``str(err)`` is a single line: what is wrong, then what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        text = problem if not fix else f"{problem}; {fix}"
        super().__init__(" ".join(text.split()))
