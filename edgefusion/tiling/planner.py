"""Choose each attention site's tiling (heads per tile x query rows per tile) with a cost model.

For every site the candidates are the untiled form and every (head group, query block) whose tile count stays
under ``max_tiles``: head groups divide the heads, query blocks are powers of two dividing the query length. Each
candidate is cut out of the NPU op graph exactly as :func:`~edgefusion.tiling.attention.tile_attention` would write
it (views that split ``q``, ``k^T`` and ``v``, the site's ops scaled per tile, views that concatenate the results)
and priced by the ``cost`` function the caller passes (the device latency model, through its public function):
large tiles spill the softmax tensors to DRAM, small ones pay a launch and two tensor<->vector hand-offs per tile.
The cheapest wins. Sites with the same shapes and precisions are priced once (``memo`` may carry the prices across
calls for one cost function).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from edgefusion.graph.op_graph import Op, OpGraph
from edgefusion.tiling.attention import AttentionSite

CostFunction = Callable[[OpGraph], float]


@dataclasses.dataclass
class TileChoice:
    """The decision for one site."""

    block: int  # query rows per tile (== lq: not split along queries)
    tiles: int
    ms_untiled: float
    ms_tiled: float
    candidates: dict[str, float]  # "<heads>x<rows>" -> ms
    heads: int = 0  # heads per tile (== the site's heads: not split per head)

    @property
    def tiled(self) -> bool:
        """Whether the site is split at all."""
        return self.tiles > 1


def _view(name: str, ins: list[str], outs: list[str], block: str) -> Op:
    return Op(name, "Split" if len(outs) > 1 else "Concat", "_view", "view", "", 0, 0, ins, outs, 0, block)


def site_op_graph(graph: OpGraph, site: AttentionSite, heads: int, block: int) -> OpGraph:
    """The op graph of one site, tiled into ``heads`` heads per tile x ``block`` query rows (uniform tiles)."""
    names = set(site.nodes)
    ops = [op for op in graph.ops if op.name in names]
    produced = {o for op in ops for o in op.outputs}
    inputs = list(dict.fromkeys(t for op in ops for t in op.inputs if t not in produced))
    sizes = {t: graph.tensor_bytes.get(t, 0) for t in inputs}
    out = ops[-1].outputs[0] if ops else site.output
    groups = site.heads // heads if 0 < heads < site.heads else 1
    rows = min(block, site.lq)
    per_group = max(1, site.lq // rows)
    if (groups == 1 and per_group == 1) or not ops:
        sizes.update({t: graph.tensor_bytes.get(t, 0) for t in produced})
        return OpGraph(graph.component, ops, sizes, inputs, [out])
    blk = ops[0].block
    qkv = {"q": next(iter(ops[0].inputs), site.query)}
    qkv["k"] = next((t for t in ops[0].inputs if t != qkv["q"]), site.key)
    qkv["v"] = next((t for t in ops[-1].inputs if t not in produced), site.value)
    new_ops: list[Op] = []
    parts = {r: [t] for r, t in qkv.items()}
    if groups > 1:
        for role, t in qkv.items():
            parts[role] = [f"{t}__h{j}" for j in range(groups)]
            for p in parts[role]:
                sizes[p] = graph.tensor_bytes.get(t, 0) // groups
            new_ops.append(_view(f"{site.softmax}__split_h{role}", [t], parts[role], blk))
    frac = 1.0 / (groups * per_group)
    tile, group_outs = 0, []
    for j in range(groups):
        q_tiles = [parts["q"][j]]
        if per_group > 1:
            q_tiles = [f"{parts['q'][j]}__q{i}" for i in range(per_group)]
            for t in q_tiles:
                sizes[t] = int(graph.tensor_bytes.get(qkv["q"], 0) * frac)
            new_ops.append(_view(f"{site.softmax}__split_g{j}", [parts["q"][j]], q_tiles, blk))
        tile_outs = []
        for q_tile in q_tiles:
            rename = {qkv["q"]: q_tile, qkv["k"]: parts["k"][j], qkv["v"]: parts["v"][j],
                      **{t: f"{t}__t{tile}" for t in produced}}
            for op in ops:
                new_ops.append(Op(f"{op.name}__t{tile}", op.op_type, op.category, op.engine, op.precision,
                                  int(op.macs * frac), int(op.elements * frac), [rename.get(t, t) for t in op.inputs],
                                  [rename[t] for t in op.outputs], op.weight_bytes, op.block, op.fusable, tile))
                for t in op.outputs:
                    sizes[rename[t]] = int(graph.tensor_bytes.get(t, 0) * frac)
            tile_outs.append(f"{out}__t{tile}")
            tile += 1
        if len(tile_outs) > 1:
            group_outs.append(f"{out}__g{j}" if groups > 1 else out)
            sizes[group_outs[-1]] = int(graph.tensor_bytes.get(out, 0) / groups)
            new_ops.append(_view(f"{site.softmax}__concat_g{j}", tile_outs, [group_outs[-1]], blk))
        else:
            group_outs.append(tile_outs[0])
    if groups > 1:
        sizes[out] = graph.tensor_bytes.get(out, 0)
        new_ops.append(_view(f"{site.softmax}__concat_h", group_outs, [out], blk))
    return OpGraph(graph.component, new_ops, sizes, inputs, [out])


def candidate_tilings(site: AttentionSite, min_block: int = 8, max_tiles: int = 256) -> list[tuple[int, int]]:
    """(heads per tile, query rows per tile): untiled first, then every head group and power-of-two query block
    that divides the site and keeps at most ``max_tiles`` tiles."""
    heads = [h for h in range(site.heads, 0, -1) if site.heads % h == 0]
    blocks = [site.lq] + [b for b in (1 << k for k in range(site.lq.bit_length() - 1, -1, -1))
                          if min_block <= b < site.lq and site.lq % b == 0]
    out = []
    for h in heads:
        for b in blocks:
            if (site.heads // h) * (site.lq // b) <= max_tiles:
                out.append((h, b))
    return out


def _signature(graph: OpGraph, site: AttentionSite) -> tuple:
    names = set(site.nodes)
    ops = [op for op in graph.ops if op.name in names]
    return (site.lq, site.lk, site.heads, tuple(
        (op.category, op.precision, op.macs, op.elements, op.weight_bytes, op.fusable,
         tuple(graph.tensor_bytes.get(t, 0) for t in op.inputs + op.outputs)) for op in ops))


def plan_attention_tiling(graph: OpGraph, sites: list[AttentionSite], cost: CostFunction, min_block: int = 8,
                          max_tiles: int = 256, memo: dict | None = None) -> dict[str, TileChoice]:
    """Pick a tiling per site (softmax node name -> :class:`TileChoice`); ``cost`` prices a site's op graph."""
    choices, memo = {}, ({} if memo is None else memo)
    for site in sites:
        key = _signature(graph, site)
        if key not in memo:
            memo[key] = {c: cost(site_op_graph(graph, site, *c)) for c in candidate_tilings(site, min_block, max_tiles)}
        costs = memo[key]
        untiled = (site.heads, site.lq)
        best = min(costs, key=lambda c: (round(costs[c], 6), (site.heads // c[0]) * (site.lq // c[1])))
        h, b = best
        choices[site.softmax] = TileChoice(
            block=b, tiles=(site.heads // h) * (site.lq // b), ms_untiled=round(costs[untiled], 4),
            ms_tiled=round(costs[best], 4), candidates={f"{c[0]}x{c[1]}": round(v, 4) for c, v in costs.items()},
            heads=h)
    return choices
