"""What a device needs of the stored integer tensors beyond the policy's widths, as one typed object.

A device profile's ``weights`` and ``activations`` sections say it (``edgefusion.latency.device.DeviceProfile
.storage_needs``); the quantizer's plan applies it (``edgefusion.quant.plan.plan_quantization``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageNeeds:
    """``per_tensor_16bit_input_weights``: op types whose int8 weights take one scale per tensor when their input
    activation is 16-bit; ``signed_16bit_second_input``: op types whose second input is read as int16 (symmetric)
    when both inputs are 16-bit activations. Empty: the quantizer's defaults (per-channel weights, uint16)."""

    per_tensor_16bit_input_weights: frozenset[str] = frozenset()
    signed_16bit_second_input: frozenset[str] = frozenset()

    def __post_init__(self):
        for name in ("per_tensor_16bit_input_weights", "signed_16bit_second_input"):
            value = getattr(self, name)
            if isinstance(value, str):  # a lone op type would become a set of letters
                raise TypeError(f"StorageNeeds.{name} takes op type names, not the string '{value}'")
            object.__setattr__(self, name, frozenset(value))

    def to_dict(self) -> dict:
        """JSON form (sorted lists)."""
        return {"per_tensor_16bit_input_weights": sorted(self.per_tensor_16bit_input_weights),
                "signed_16bit_second_input": sorted(self.signed_16bit_second_input)}

    @classmethod
    def from_dict(cls, data: dict) -> "StorageNeeds":
        """Inverse of :meth:`to_dict`."""
        return cls(frozenset(data.get("per_tensor_16bit_input_weights", ())),
                   frozenset(data.get("signed_16bit_second_input", ())))
