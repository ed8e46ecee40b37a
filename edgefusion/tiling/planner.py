"""Choose each attention site's query block with the latency model.

For every site the candidates are the untiled form and power-of-two query blocks down to ``min_block`` rows. Each
candidate is costed on the site alone (its QK^T, softmax, PV and fused chain ops, cut out of the NPU op graph and
scaled per tile, plus the Split/Concat the rewrite adds), with its inputs on chip when they fit: small tiles pay a
kernel launch per op per tile, large ones spill the softmax tensors to DRAM. The cheapest wins.
"""

from __future__ import annotations

import dataclasses

from edgefusion.latency.cost_model import estimate_graph
from edgefusion.latency.device import DeviceProfile
from edgefusion.latency.op_graph import Op, OpGraph
from edgefusion.tiling.attention import AttentionSite, block_sizes


@dataclasses.dataclass
class TileChoice:
    """The decision for one site."""

    block: int  # query rows per tile (== lq: untiled)
    tiles: int
    ms_untiled: float
    ms_tiled: float
    candidates: dict[int, float]


def _site_graph(graph: OpGraph, site: AttentionSite, block: int) -> OpGraph:
    names = set(site.nodes)
    ops = [op for op in graph.ops if op.name in names]
    produced = {o for op in ops for o in op.outputs}
    inputs = list(dict.fromkeys(t for op in ops for t in op.inputs if t not in produced))
    sizes = {t: graph.tensor_bytes.get(t, 0) for t in inputs}
    out = ops[-1].outputs[0] if ops else site.output
    if block >= site.lq or not ops:
        sizes.update({t: graph.tensor_bytes.get(t, 0) for t in produced})
        return OpGraph(graph.component, ops, sizes, inputs, [out])
    tiles = block_sizes(site.lq, block)
    query = next((t for t in ops[0].inputs), site.query)
    new_ops = [Op(f"{site.softmax}__split", "Split", "_data", "vector_engine", ops[0].precision, 0,
                  0, [query], [f"{query}__q{i}" for i in range(len(tiles))], 0, ops[0].block)]
    q_bytes = graph.tensor_bytes.get(query, 0)
    for i, rows in enumerate(tiles):
        frac = rows / site.lq
        sizes[f"{query}__q{i}"] = int(q_bytes * frac)
        new_ops[0].elements += int(q_bytes * frac)
        rename = {query: f"{query}__q{i}", **{t: f"{t}__t{i}" for t in produced}}
        for op in ops:
            clone = dataclasses.replace(op, name=f"{op.name}__t{i}", inputs=[rename.get(t, t) for t in op.inputs],
                                        outputs=[rename[t] for t in op.outputs], macs=int(op.macs * frac),
                                        elements=int(op.elements * frac), weight_bytes=op.weight_bytes)
            for t in op.outputs:
                sizes[rename[t]] = int(graph.tensor_bytes.get(t, 0) * frac)
            new_ops.append(clone)
    outs = [f"{out}__t{i}" for i in range(len(tiles))]
    sizes[out] = graph.tensor_bytes.get(out, 0)
    new_ops.append(Op(f"{site.softmax}__concat", "Concat", "_data", "vector_engine", ops[-1].precision, 0,
                      ops[-1].elements, outs, [out], 0, ops[-1].block))
    return OpGraph(graph.component, new_ops, sizes, inputs, [out])


def candidate_blocks(lq: int, min_block: int = 8) -> list[int]:
    """Untiled, then halving query blocks down to ``min_block`` rows."""
    out = [lq]
    b = 1 << max(0, (lq - 1).bit_length() - 1)
    while b >= min_block and b < lq:
        out.append(b)
        b //= 2
    return out


def plan_attention_tiling(graph: OpGraph, sites: list[AttentionSite], device: DeviceProfile,
                          min_block: int = 8) -> dict[str, TileChoice]:
    """Pick a query block per site (softmax node name -> :class:`TileChoice`)."""
    choices = {}
    for site in sites:
        costs = {b: estimate_graph(_site_graph(graph, site, b), device, inputs_on_chip=True).ms
                 for b in candidate_blocks(site.lq, min_block)}
        best = min(costs, key=lambda b: (round(costs[b], 6), -b))
        choices[site.softmax] = TileChoice(block=best, tiles=len(block_sizes(site.lq, best)),
                                           ms_untiled=round(costs[site.lq], 4), ms_tiled=round(costs[best], 4),
                                           candidates={b: round(c, 4) for b, c in costs.items()})
    return choices
