"""Evaluation prompt sets: a UTF-8 text file (one prompt per line, e.g. MS-COCO captions) or the embedded model's
held-out prompts (``held-out:N``). Each prompt keeps its index in the set; image ``k`` is sampled with seed
``seed + k``, so any shard of the set reproduces exactly the images the whole run would make."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from edgefusion.errors import EdgeFusionError

HELD_OUT = "held-out:"


@dataclass(frozen=True)
class Prompt:
    """One prompt: its index in the set (the seed offset) and the line it came from (``None`` if generated)."""

    index: int
    text: str
    line: int | None = None


@dataclass
class PromptSet:
    """An ordered prompt set with a content digest (shards and merges check it)."""

    name: str
    prompts: list[Prompt]
    skipped_blank_lines: int = 0

    def digest(self) -> str:
        """sha256 over the prompt texts in order (the name and file location do not count)."""
        h = hashlib.sha256()
        for p in self.prompts:
            h.update(p.text.encode("utf-8") + b"\n")
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return {"name": self.name, "prompts": [asdict(p) for p in self.prompts],
                "skipped_blank_lines": self.skipped_blank_lines}

    @classmethod
    def from_dict(cls, d: dict) -> PromptSet:
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], [Prompt(**p) for p in d["prompts"]], d.get("skipped_blank_lines", 0))


def read_prompt_file(path: str | Path) -> PromptSet:
    """Prompts of a UTF-8 text file, one per line; blank lines are skipped (and counted), anything else refused."""
    path = Path(path)
    if not path.is_file():
        raise EdgeFusionError(f"prompt file '{path}' does not exist",
                              "pass a UTF-8 text file with one prompt per line, or held-out:N for the embedded model")
    data = path.read_bytes()
    prompts, blank = [], 0
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise EdgeFusionError(f"prompt file '{path}' is not UTF-8 text (line {number}, byte {err.start} of the "
                                  "line)", "re-save the file as UTF-8") from None
        text = " ".join(line.replace("\ufeff", "").split())
        if not text:
            blank += 1
            continue
        prompts.append(Prompt(len(prompts), text, number))
    if not prompts:
        raise EdgeFusionError(f"prompt file '{path}' holds no prompts (only blank lines)",
                              "write one prompt per line")
    return PromptSet(str(path), prompts, blank)


def held_out_prompt_set(n: int, seed: int = 0) -> PromptSet:
    """The embedded model's ``n`` held-out prompts for ``seed`` (the same list ``eval/attribute_accuracy.py`` uses)."""
    from edgefusion.embedded.shapes import held_out_prompts

    if n < 1:
        raise EdgeFusionError(f"held-out:{n} asks for no prompts", "pass held-out:N with N >= 1")
    return PromptSet(f"{HELD_OUT}{n}", [Prompt(i, a.caption()) for i, a in enumerate(held_out_prompts(n, seed))])


def load_prompt_set(spec: str, seed: int = 0) -> PromptSet:
    """``held-out:N`` (embedded model's held-out captions, chosen with ``seed``) or a path to a prompt file."""
    if spec.startswith(HELD_OUT):
        count = spec[len(HELD_OUT):]
        if not count.isdigit():
            raise EdgeFusionError(f"prompt set '{spec}' is not held-out:N with a whole number N",
                                  "pass e.g. held-out:24, or a prompt file")
        return held_out_prompt_set(int(count), seed)
    return read_prompt_file(spec)
