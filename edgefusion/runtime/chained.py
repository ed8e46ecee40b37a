"""Run a graph split into sub-graphs (``part0.onnx``, ``part1.onnx`` ...) as if it were one session."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from edgefusion.runtime.session import open_session


class ChainedSession:
    """Sessions run in order; each part reads graph inputs and earlier parts' outputs by name."""

    def __init__(self, paths: list[str | Path], opener=None):
        self.sessions = [(opener or open_session)(p) for p in paths]
        produced = {o.name for s in self.sessions for o in s.get_outputs()}
        self._inputs = list(dict.fromkeys(i.name for s in self.sessions for i in s.get_inputs()
                                          if i.name not in produced))
        self._types = {i.name: i.type for s in reversed(self.sessions) for i in s.get_inputs()}
        self._outputs = [o.name for o in self.sessions[-1].get_outputs()]

    def get_inputs(self):
        """The whole chain's inputs (objects with ``.name`` and ``.type``, like onnxruntime's)."""
        return [SimpleNamespace(name=n, type=self._types.get(n)) for n in self._inputs]

    def get_outputs(self):
        """The last part's outputs."""
        return [SimpleNamespace(name=n) for n in self._outputs]

    def run(self, output_names, feeds: dict):
        """Run every part; returns the requested outputs (default: the last part's)."""
        values = dict(feeds)
        for s in self.sessions:
            names = [o.name for o in s.get_outputs()]
            values.update(zip(names, s.run(names, {i.name: values[i.name] for i in s.get_inputs()})))
        return [values[n] for n in (output_names or self._outputs)]
