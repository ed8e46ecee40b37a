"""Quality-vs-cost frontier of per-layer precision assignments, from a report's noise model and a cost model.

Two greedy walks over layer precisions: up from every free layer at the cheapest candidate (W8A8), each time taking
the change that removes the most noise per unit of added cost; and down from every free layer at the most precise
one (FP16), each time taking the change that adds the least noise per unit of saved cost. The down walk finds what
the up walk cannot: a tensor clipped outside its calibration range stays quantized until *both* its producer and
its consumers leave the integer precisions, which no single change does. A layer's
change only alters the sites it touches (the exporter's max-of-requests rule decides their widths), so each step
re-scores just the layers sharing a site with the changed one. The Pareto front of both walks and the preset
policies is the frontier the automatic policy is picked from.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from edgefusion.quant.precision import Precision
from edgefusion.sensitivity.noise_model import ACT_KEYS, NoiseModel


@dataclass
class Point:
    """One assignment on a walk: pooled noise, cost, and how to rebuild it (walk id, number of moves)."""

    noise: float
    cost: float
    walk: str
    moves: int
    label: str = ""


@dataclass
class Frontier:
    """The walks (start states and moves) and the Pareto-optimal points over them."""

    starts: dict[str, dict[str, Precision]] = field(default_factory=dict)
    moves: dict[str, list[tuple[str, Precision]]] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)  # all points, every walk
    pareto: list[Point] = field(default_factory=list)  # non-dominated, by increasing cost

    def assignment(self, point: Point) -> dict[str, Precision]:
        """The layer precisions of ``point``."""
        state = dict(self.starts[point.walk])
        for layer, p in self.moves.get(point.walk, [])[:point.moves]:
            state[layer] = p
        return state


class _Local:
    """Pooled noise and cost of one layer's neighbourhood under a state (fast tables)."""

    def __init__(self, nm: NoiseModel, costs: dict[str, dict[Precision, float]]):
        self.nm = nm
        self.site_noise, self.weight_noise = nm.local_tables()
        self.costs = costs
        sites = nm.sites
        self.neighbours: dict[str, set[str]] = {}
        for name, idx in sites.layer_sites.items():
            near = set()
            for i in idx:
                s = sites.sites[i]
                near |= {s.producer, *s.consumers} - {None}
            self.neighbours[name] = near - {name}

    def noise(self, layer: str, state: dict[str, Precision]) -> float:
        p = state.get(layer)
        total = 0.0
        if p is not None and p.is_integer:
            total += self.weight_noise.get(layer, {}).get("int8", 0.0)
        elif p is Precision.FP16:
            total += self.weight_noise.get(layer, {}).get("fp16", 0.0)
        for i in self.nm.sites.layer_sites.get(layer, []):
            t = self.nm.sites.site_treatment(self.nm.sites.sites[i], state)
            if t is not None:
                total += self.site_noise[i][t]
        return total


def _walk(local: _Local, state: dict[str, Precision], free: list[str], candidates: list[Precision],
          upward: bool) -> list[tuple[str, Precision, float, float]]:
    """Greedy moves ``(layer, precision, noise change, cost change)`` from ``state`` (modified in place)."""
    version = {n: 0 for n in free}
    heap: list = []

    def push(layer: str) -> None:
        cur = state[layer]
        base_noise = local.noise(layer, state)
        c0 = local.costs[layer][cur]
        best = None
        for p in candidates:
            dc = local.costs[layer][p] - c0
            if p == cur or (dc <= 0 if upward else dc >= 0):
                continue
            state[layer] = p
            dn = local.noise(layer, state) - base_noise
            state[layer] = cur
            if upward and dn >= 0:
                continue
            score = (-dn / dc) if upward else (dn / -dc)  # noise removed per cost added / added per cost saved
            key = -score if upward else score
            if best is None or key < best[0]:
                best = (key, p, dn, dc)
        if best is not None:
            heapq.heappush(heap, (best[0], version[layer], layer, best[1], best[2], best[3]))

    for layer in free:
        push(layer)
    moves = []
    while heap:
        _, ver, layer, p, dn, dc = heapq.heappop(heap)
        if ver != version[layer]:
            continue
        state[layer] = p
        moves.append((layer, p, dn, dc))
        for name in {layer} | (local.neighbours.get(layer, set()) & version.keys()):
            version[name] += 1
            push(name)
    return moves


def build_frontier(nm: NoiseModel, costs: dict[str, dict[Precision, float]], locked: dict[str, Precision],
                   candidates: list[Precision], presets: dict[str, dict[str, Precision]]) -> Frontier:
    """Both greedy walks plus the presets; see the module docstring."""
    local = _Local(nm, costs)
    free = [n for n in nm.sites.op_types if n not in locked]
    fr = Frontier()
    for walk, upward in (("up", True), ("down", False)):
        start = dict(locked)
        for n in free:  # candidates run from the cheapest to the most precise (equal costs: the order decides)
            start[n] = candidates[0] if upward else candidates[-1]
        fr.starts[walk] = dict(start)
        noise = float(nm.noise_of(start).sum())
        cost = sum(costs[n][p] for n, p in start.items())
        fr.points.append(Point(noise, cost, walk, 0))
        moves = _walk(local, start, free, candidates, upward)
        fr.moves[walk] = [(m[0], m[1]) for m in moves]
        for k, (_, _, dn, dc) in enumerate(moves, 1):
            noise += dn
            cost += dc
            fr.points.append(Point(max(noise, 0.0), cost, walk, k))
    for name, prec in presets.items():
        fr.starts[name] = dict(prec)
        fr.points.append(Point(float(nm.noise_of(prec).sum()), sum(costs[n][p] for n, p in prec.items()),
                               name, 0, label=name))
    best = float("inf")
    for pt in sorted(fr.points, key=lambda q: (q.cost, q.noise)):
        if pt.noise < best:
            fr.pareto.append(pt)
            best = pt.noise
    return fr


def site_widths(nm: NoiseModel, state: dict[str, Precision]) -> dict[str, int]:
    """How many sites end up at each treatment (for summaries)."""
    out: dict[str, int] = {}
    for s in nm.sites.sites:
        t = nm.sites.site_treatment(s, state)
        key = "float" if t is None else ACT_KEYS[t]
        out[key] = out.get(key, 0) + 1
    return out
