"""``--shard i/n``: split a prompt set across processes or machines (1-based, round-robin by prompt index)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.prompts import Prompt


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (1 <= index <= count). ``1/1`` is the whole set."""

    index: int = 1
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        """True when this shard is the whole prompt set."""
        return self.count == 1

    def select(self, prompts: list[Prompt]) -> list[Prompt]:
        """The prompts of this shard: every ``count``-th prompt starting at index ``index - 1``."""
        return [p for p in prompts if p.index % self.count == self.index - 1]


def parse_shard(spec: str | None) -> ShardSpec:
    """Parse ``i/n`` (e.g. ``2/4``); ``None`` or empty means the whole set. ``3/2``, ``0/2``, ``a/b`` are refused."""
    if spec is None or not str(spec).strip():
        return ShardSpec()
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise EdgeFusionError(f"shard '{spec}' is not of the form i/n", "pass e.g. --shard 1/4 (shard 1 of 4)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise EdgeFusionError(f"shard '{spec}' is out of range: i must be between 1 and n, and n at least 1",
                              f"pass --shard i/{max(count, 1)} with 1 <= i <= {max(count, 1)}")
    return ShardSpec(index, count)
