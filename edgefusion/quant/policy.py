"""Mixed-precision policies: an ordered map of rules -> precision (after torchao's FqnToConfig).

Rule keys, tried in order, first match wins:
  ``"re:<regex>"``  searched in the layer name ``<component>/<module path>/<op>``
  ``"op:<Type>"``   layer op type (``Conv``, ``MatMul``, ``Softmax``, ``SiLU``, ``GroupNorm`` ... or any ONNX op)
  ``"<name>"``      exact layer name
  ``"_default"``    everything else (required)

In a ``re:`` key, ``<list>\\.{last}`` stands for the highest index of ``<list>`` among the graph's layer names
(``up_blocks\\.{last}`` is ``up_blocks\\.3`` in an SD UNet, ``up_blocks\\.1`` in the embedded one): the rules
are bound to a graph's layers (:meth:`PolicySpec.bound`) before they are matched. With no such layer the key stays
unbound and matches nothing (``unmatched_rules`` names it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.layers import Layer, known_op_types
from edgefusion.quant.precision import Precision
from edgefusion.resources import config_dir, shipped_names

# A policy names at most one rule per layer that needs its own precision. sd-v1.5, the largest model here, has about
# 1,250 layers over its three graphs (758 in the UNet); 10,000 rules leave 8x room. Resolving costs rules x layers
# regex tests, so an unbounded file would also be an unbounded run. 10,000 rules of up to ~200 bytes (long module
# paths) fit in 2 MiB; the pure-Python YAML parser read 10,000 rules (1.1 MiB) in 1.9 s on 2 busy cores.
MAX_RULES = 10_000
MAX_POLICY_BYTES = 2 * 2**20
LAST = "{last}"
_LAST_IN_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\\\.\{last\}")  # ``name\.{last}`` in a regex key


class _Refused(Exception):
    """Raised by the loader; turned into a one-line error naming the file and line."""

    def __init__(self, what: str, fix: str, mark=None):
        self.what, self.fix, self.line = what, fix, (mark.line + 1 if mark is not None else None)
        super().__init__(what)


class _PolicyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases/anchors (no "billion laughs" expansion, no merge keys), without
    duplicate keys (YAML would silently keep the last) and with string keys only (``123:`` or ``~:`` would become
    the rules '123' / 'None')."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("uses YAML anchors/aliases (&name / *name), which policies do not allow",
                           "write every value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
                raise _Refused(f"has a key that is not a string ({shown!r})", "quote it, or fix the rule",
                               key_node.start_mark)
            if key_node.value in seen:
                raise _Refused(f"has the key '{key_node.value}' twice (YAML would keep only the last)",
                               "keep one of them", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def parse_policy_text(text: str, where: str = "policy") -> object:
    """Parse policy YAML (or JSON) with :class:`_PolicyLoader`; a refusal is a one-line error naming ``where``."""
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise EdgeFusionError(f"{where} is {len(text.encode('utf-8')) / 2**20:.1f} MiB, over the "
                              f"{MAX_POLICY_BYTES // 2**20} MiB a policy may have",
                              f"a policy needs at most one rule per layer ({MAX_RULES} rules)")
    try:
        return yaml.load(text, Loader=_PolicyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as err:
        at = f" (line {err.line})" if err.line else ""
        raise EdgeFusionError(f"{where} {err.what}{at}", err.fix) from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise EdgeFusionError(f"{where} is not valid YAML ({first})",
                              "fix the syntax; see configs/policies/default.yaml") from None


@lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def rule_matches(key: str, layer: Layer) -> bool:
    """Whether rule ``key`` (``re:``, ``op:``, an exact name or ``_default``) matches ``layer``."""
    if key == "_default" or key == layer.name:
        return True
    if key.startswith("re:"):
        return _regex(key[3:]).search(layer.name) is not None
    return key.startswith("op:") and key[3:] == layer.op_type


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
        unknown = set(map(str, data)) - {"name", "description", "rules"}
        if len(data["rules"]) > MAX_RULES:
            raise EdgeFusionError(f"{where} has {len(data['rules'])} rules, more than the {MAX_RULES} a policy may "
                                  "have", "use regular expressions ('re:') or op types ('op:') to cover many layers")
        if unknown:
            raise EdgeFusionError(f"{where} has unknown top-level keys {sorted(unknown)}",
                                  "allowed keys are name, description, rules")
        ops = known_op_types()
        rules: list[tuple[str, Precision]] = []
        for key, value in data["rules"].items():
            if not isinstance(key, str):
                raise EdgeFusionError(f"{where} has a rule key that is not a string ({key!r})", "quote the key")
            prec = Precision.parse(value, f"{where} rule '{key}'")
            if key.startswith("re:"):
                try:
                    _regex(key[3:])
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

    def bound(self, layers: list[Layer]) -> "PolicySpec":
        """This spec with every ``<list>\\.{last}`` in a ``re:`` key replaced by the highest index of ``<list>``
        among ``layers``' names, ``layers`` being one graph's (a key whose list no layer has is left as written: it
        matches nothing)."""
        if not any(LAST in k for k, _ in self.rules):
            return self
        names = [la.name for la in layers]

        def last_index(m: re.Match) -> str:
            found = [int(x) for n in names for x in re.findall(rf"(?:^|[/.]){re.escape(m.group(1))}\.(\d+)[./]", n)]
            return f"{m.group(1)}\\.{max(found)}" if found else m.group(0)

        rules = [(_LAST_IN_KEY.sub(last_index, k) if k.startswith("re:") else k, p) for k, p in self.rules]
        return PolicySpec(self.name, rules, self.description)

    def precision_for(self, layer: Layer) -> Precision:
        """The precision of the first rule matching ``layer``."""
        for key, prec in self.rules:
            if rule_matches(key, layer):
                return prec
        raise AssertionError("unreachable: _default is validated")

    def unmatched_rules(self, layers: list[Layer]) -> list[str]:
        """The rules (``_default`` aside) that match none of ``layers`` (typos, or rules for another model)."""
        live = [la for la in layers if not la.passthrough]
        graphs: dict[str, list[Layer]] = {}  # ``{last}`` binds per graph (the VAE has up_blocks too)
        for la in live:
            graphs.setdefault(la.name.split("/", 1)[0], []).append(la)
        matched: set[int] = set()
        for members in graphs.values():
            for i, (b, _) in enumerate(self.bound(members).rules):
                if i not in matched and any(rule_matches(b, la) for la in members):
                    matched.add(i)
        return [k for i, (k, _) in enumerate(self.rules) if k != "_default" and i not in matched]

    def to_yaml(self) -> str:
        """YAML text a user can edit and pass back with --mpq-policy."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def policy_names() -> list[str]:
    """Names of the shipped policy presets."""
    return shipped_names("policies", ".yaml")


def load_policy(ref: str | Path, also: tuple[str, ...] = ()) -> PolicySpec:
    """A preset name (``default``, ``w8a8``, ``w8a16``, ``fp16``) or a path to a YAML/JSON policy file.
    ``also``: other names the caller accepts (e.g. ``auto``), listed in the error for an unknown name."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if ref in policy_names() and not path.exists():
        path = config_dir("policies") / f"{ref}.yaml"
    elif not path.is_file():
        raise EdgeFusionError(f"policy '{ref}' is neither a preset nor an existing file",
                              f"use one of {', '.join(policy_names() + list(also))} or a path to a policy YAML")
    size = path.stat().st_size
    if size > MAX_POLICY_BYTES:  # before reading it
        raise EdgeFusionError(f"policy file '{path}' is {size / 2**20:.1f} MiB, over the "
                              f"{MAX_POLICY_BYTES // 2**20} MiB a policy may have",
                              f"a policy needs at most one rule per layer ({MAX_RULES} rules)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EdgeFusionError(f"policy file '{path}' is not UTF-8 text (byte {err.start})", "re-save it as UTF-8") \
            from None
    where = f"policy '{path.name}'"
    return PolicySpec.from_dict(parse_policy_text(text, where), where=where)


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
    """Apply ``spec`` (bound to ``layers``, :meth:`PolicySpec.bound`) to every non-passthrough layer."""
    res = ResolvedPolicy(spec.name)
    spec = spec.bound(layers)
    for layer in layers:
        if not layer.passthrough:
            res.precisions[layer.name] = spec.precision_for(layer)
            res.op_types[layer.name] = layer.op_type
    return res
