"""Mixed-precision policies: an ordered map of rules -> precision (after torchao's FqnToConfig).

Rule keys, tried in order, first match wins:
  ``"re:<regex>"``  searched in the layer name ``<component>/<module path>/<op>``
  ``"op:<Type>"``   layer op type (``Conv``, ``MatMul``, ``Softmax``, ``SiLU``, ``GroupNorm`` ... or any ONNX op)
  ``"<name>"``      exact layer name
  ``"_default"``    everything else (required)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.layers import Layer, known_op_types
from edgefusion.quant.precision import Precision
from edgefusion.resources import config_dir, shipped_names


@dataclass
class PolicySpec:
    """A named, ordered list of ``(key, precision)`` rules; see the module docstring for keys."""

    name: str
    rules: list[tuple[str, Precision]]
    description: str = ""

    def to_dict(self) -> dict:
        """Plain-dict form (rules as an ordered mapping), the same shape as the YAML files."""
        return {"name": self.name, "description": self.description,
                "rules": {k: p.value for k, p in self.rules}}

    @classmethod
    def from_dict(cls, data: object, where: str = "policy") -> "PolicySpec":
        """Validate and build a spec; any problem raises a one-line error naming ``where``."""
        if not isinstance(data, dict) or not isinstance(data.get("rules"), dict) or not data["rules"]:
            raise EdgeFusionError(f"{where} is not a policy: it needs a 'rules:' mapping of key -> precision",
                                  "see configs/policies/default.yaml for the format")
        unknown = set(data) - {"name", "description", "rules"}
        if unknown:
            raise EdgeFusionError(f"{where} has unknown top-level keys {sorted(unknown)}",
                                  "allowed keys are name, description, rules")
        ops = known_op_types()
        rules: list[tuple[str, Precision]] = []
        for key, value in data["rules"].items():
            key = str(key)
            prec = Precision.parse(value, f"{where} rule '{key}'")
            if key.startswith("re:"):
                try:
                    re.compile(key[3:])
                except re.error as err:
                    raise EdgeFusionError(f"{where} rule '{key}' is not a valid regular expression ({err})",
                                          "fix the pattern after 're:'") from None
            elif key.startswith("op:") and key[3:] not in ops:
                raise EdgeFusionError(f"{where} rule '{key}' names an unknown op type '{key[3:]}'",
                                      "use Conv, MatMul, Gemm, Softmax, SiLU, GroupNorm, LayerNorm, GELU "
                                      "or an ONNX operator name")
            rules.append((key, prec))
        if rules[-1][0] != "_default":
            if any(k == "_default" for k, _ in rules):
                raise EdgeFusionError(f"{where}: '_default' must be the last rule",
                                      "move it to the end (rules after it could never match)")
            raise EdgeFusionError(f"{where} has no '_default' rule", "add '_default: W8A8' (or another precision) last")
        return cls(name=str(data.get("name", where)), rules=rules, description=str(data.get("description", "")))

    def precision_for(self, layer: Layer) -> Precision:
        """The precision of the first rule matching ``layer``."""
        for key, prec in self.rules:
            if key == "_default" or key == layer.name:
                return prec
            if key.startswith("re:") and re.search(key[3:], layer.name):
                return prec
            if key.startswith("op:") and key[3:] == layer.op_type:
                return prec
        raise AssertionError("unreachable: _default is validated")

    def to_yaml(self) -> str:
        """YAML text a user can edit and pass back with --mpq-policy."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def policy_names() -> list[str]:
    """Names of the shipped policy presets."""
    return shipped_names("policies", ".yaml")


def load_policy(ref: str | Path) -> PolicySpec:
    """A preset name (``default``, ``w8a8``, ``w8a16``, ``fp16``) or a path to a YAML/JSON policy file."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if ref in policy_names() and not path.exists():
        path = config_dir("policies") / f"{ref}.yaml"
    elif not path.is_file():
        raise EdgeFusionError(f"policy '{ref}' is neither a preset nor an existing file",
                              f"use one of {', '.join(policy_names())} or a path to a policy YAML")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise EdgeFusionError(f"policy file '{path}' is not valid YAML ({first})",
                              "fix the syntax; see configs/policies/default.yaml") from None
    return PolicySpec.from_dict(data, where=f"policy '{path.name}'")


@dataclass
class ResolvedPolicy:
    """Layer name -> precision for one graph, with the op type of each layer (passthrough layers omitted)."""

    policy: str
    precisions: dict[str, Precision] = field(default_factory=dict)
    op_types: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{op type: {precision: number of layers}}``."""
        out: dict[str, Counter] = {}
        for name, prec in self.precisions.items():
            out.setdefault(self.op_types[name], Counter())[prec.value] += 1
        return {op: dict(sorted(c.items())) for op, c in sorted(out.items())}

    def to_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return {"policy": self.policy, "counts": self.counts(),
                "layers": {n: {"op_type": self.op_types[n], "precision": p.value}
                           for n, p in self.precisions.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "ResolvedPolicy":
        """Inverse of :meth:`to_dict`."""
        return cls(d["policy"], {n: Precision(v["precision"]) for n, v in d["layers"].items()},
                   {n: v["op_type"] for n, v in d["layers"].items()})

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ResolvedPolicy":
        """Read from JSON."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def resolve_policy(spec: PolicySpec, layers: list[Layer]) -> ResolvedPolicy:
    """Apply ``spec`` to every non-passthrough layer."""
    res = ResolvedPolicy(spec.name)
    for layer in layers:
        if not layer.passthrough:
            res.precisions[layer.name] = spec.precision_for(layer)
            res.op_types[layer.name] = layer.op_type
    return res
