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
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise EdgeFusionError(f"prompt file '{path}' holds no prompts", "write one prompt per line")
    return prompts


def split_prompts(prompts: list[str], n_calib: int, n_verify: int) -> tuple[list[str], list[str]]:
    """Disjoint calibration and verification prompts, spread over the whole file (deterministic)."""
    if n_calib < 1:
        raise EdgeFusionError(f"calibration needs at least one prompt, got {n_calib}", "pass --calib-prompts 1 or more")
    if len(prompts) < n_calib + n_verify:
        raise EdgeFusionError(f"the prompt file has {len(prompts)} prompts but {n_calib} calibration + {n_verify} "
                              "verification prompts were asked for", "add prompts or lower --calib-prompts")
    stride = len(prompts) / (n_calib + n_verify)
    picked = [prompts[int(i * stride)] for i in range(n_calib + n_verify)]
    return picked[:n_calib], picked[n_calib:]
