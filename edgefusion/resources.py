"""Paths of the data files shipped with the package (model presets, policies, prompt sets)."""

from importlib import resources
from pathlib import Path


def config_dir(kind: str) -> Path:
    """Folder of shipped configs of one kind: ``models``, ``policies`` or ``prompts``."""
    return Path(str(resources.files("edgefusion.configs").joinpath(kind)))


def shipped_names(kind: str, suffix: str) -> list[str]:
    """Names (file stems) of the shipped configs of one kind."""
    return sorted(p.stem for p in config_dir(kind).glob(f"*{suffix}"))
