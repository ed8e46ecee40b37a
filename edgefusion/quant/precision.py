"""The precisions a layer can take."""

from __future__ import annotations

from enum import Enum

from edgefusion.errors import EdgeFusionError


class Precision(str, Enum):
    """W8A8 / W8A16: int8 weights with 8- or 16-bit integer activations; FP16; FP32 (left as exported)."""

    W8A8 = "W8A8"
    W8A16 = "W8A16"
    FP16 = "FP16"
    FP32 = "FP32"

    @property
    def activation_bits(self) -> int | None:
        """Integer activation width, or None for float precisions."""
        return {"W8A8": 8, "W8A16": 16}.get(self.value)

    @property
    def is_integer(self) -> bool:
        """True for the QDQ (integer) precisions."""
        return self.activation_bits is not None

    @classmethod
    def parse(cls, text: str, where: str = "") -> "Precision":
        """Parse a precision name (case-insensitive), with a one-line error naming ``where``."""
        try:
            return cls(str(text).upper())
        except ValueError:
            raise EdgeFusionError(f"unknown precision '{text}'{' in ' + where if where else ''}",
                                  f"use one of {', '.join(p.value for p in cls)}") from None
