"""Prompt sets: the shipped calibration prompts, or a user's text file (one prompt per line)."""

from __future__ import annotations

from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.resources import config_dir


def read_prompts(path: str | Path | None = None) -> list[str]:
    """Prompts from ``path`` (UTF-8, one per line, blank lines skipped) or the shipped calibration set."""
    path = Path(path) if path else config_dir("prompts") / "calibration.txt"
    if not path.is_file():
        raise EdgeFusionError(f"prompt file '{path}' does not exist", "pass a UTF-8 text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EdgeFusionError(f"prompt file '{path}' is not UTF-8 text (byte {err.start})",
                              "re-save it as UTF-8") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            check_prompt_text(line, f"line {number} of prompt file '{path}'")
            prompts.append(line.strip())
    if not prompts:
        raise EdgeFusionError(f"prompt file '{path}' holds no prompts", "write one prompt per line")
    return prompts


def has_printable_text(text: str) -> bool:
    """Whether ``text`` holds at least one visible character (not only spaces, NUL bytes or control codes)."""
    return any(c.isprintable() and not c.isspace() for c in text)


def check_prompt_text(text: str, where: str = "the prompt") -> None:
    """Refuse (one line) a prompt with no visible character: the model would be conditioned on nothing."""
    if not has_printable_text(text):
        shown = repr(text[:20]) + ("..." if len(text) > 20 else "")
        raise EdgeFusionError(f"{where} holds no printable text ({shown})",
                              "write prompts as plain text, one per line")


def split_prompts(prompts: list[str], n_calib: int, n_verify: int) -> tuple[list[str], list[str]]:
    """Disjoint calibration and verification prompts, each spread over the whole file (deterministic): the
    ``n_calib + n_verify`` prompts are picked at even spacing and every ``n / n_verify``-th pick (offset by half a
    step) verifies. Both sets span a sorted file; taking the first picks for calibration did not (the embedded
    model's file lists its "a large ..." prompts first: the export's 8 calibration prompts held 7 large shapes, and
    the fidelity bench calibrated on 8 large ones and held out 6 small ones, whose UNet input latents reached 6.2
    where the calibration's stopped at 4.3)."""
    if n_calib < 1:
        raise EdgeFusionError(f"calibration needs at least one prompt, got {n_calib}", "pass --calib-prompts 1 or more")
    if len(prompts) < n_calib + n_verify:
        raise EdgeFusionError(f"the prompt file has {len(prompts)} prompts but {n_calib} calibration + {n_verify} "
                              "verification prompts were asked for", "add prompts or lower --calib-prompts")
    n = n_calib + n_verify
    stride = len(prompts) / n
    picked = [prompts[int(i * stride)] for i in range(n)]
    verify = {int((j + 0.5) * n / n_verify) for j in range(n_verify)}  # distinct: n / n_verify > 1 (empty if 0)
    return ([p for i, p in enumerate(picked) if i not in verify],
            [p for i, p in enumerate(picked) if i in verify])
