"""Policy rules that match no layer of the exported graphs: a warning naming them (an error under ``--strict``).

A typo in a rule (``re:^untet/``) otherwise passes silently and the layers it meant fall through to ``_default``.
"""

from __future__ import annotations

from pathlib import Path

from edgefusion import diagnostics


def check_rules_match(spec, graphs: dict[str, Path]) -> list[str]:
    """Warn about the rules of ``spec`` that match no layer of ``graphs`` ({component: float ONNX path});
    returns them. Layers are found exactly as the quantizer finds them (structure only, no weights)."""
    from edgefusion.quant.layers import find_layers
    from edgefusion.quant.quantize_graph import prepare_float_graph

    layers = [la for comp, path in graphs.items() for la in find_layers(prepare_float_graph(Path(path)), comp)]
    unmatched = spec.unmatched_rules(layers)
    if unmatched:
        shown = ", ".join(f"'{k}'" for k in unmatched[:8]) + (f" and {len(unmatched) - 8} more"
                                                              if len(unmatched) > 8 else "")
        diagnostics.warn(f"{len(unmatched)} rule(s) of policy '{spec.name}' match no layer of this model: {shown}",
                         "fix or remove them (layer names are listed in <component>/precisions.json of an export)")
    return unmatched
