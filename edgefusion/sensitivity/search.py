"""Quality-vs-cost frontier of per-layer precision assignments, from a report's noise model and a cost model.

Two greedy walks over layer precisions: up from every free layer at the cheapest candidate (W8A8), each time taking
the change that removes the most noise per unit of added cost; and down from every free layer at the most precise
one (FP16), each time taking the change that adds the least noise per unit of saved cost. The down walk finds what
the up walk cannot: a tensor clipped outside its calibration range stays quantized until *both* its producer and
its consumers leave the integer precisions, which no single change does. A layer's
change only alters the sites it touches (the exporter's max-of-requests rule decides their widths) and the layers
it promotes (a W8A8 Conv/Gemm/Linear touching a 16-bit tensor becomes W8A16, ``quant/plan.py``; the move carries
them, so every state on a walk is what the exporter runs), so each step re-scores just the layers sharing a site
with a changed one. The Pareto front of both walks and the preset
policies is the frontier the automatic policy is picked from.
"""

from __future__ import annotations

import heapq
from collections import ChainMap
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
    moves: dict[str, list[dict[str, Precision]]] = field(default_factory=dict)  # per walk: changes per step
    points: list[Point] = field(default_factory=list)  # all points, every walk
    pareto: list[Point] = field(default_factory=list)  # non-dominated, by increasing cost

    def assignment(self, point: Point) -> dict[str, Precision]:
        """The layer precisions of ``point``."""
        state = dict(self.starts[point.walk])
        for changes in self.moves.get(point.walk, [])[:point.moves]:
            state.update(changes)
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

    def noise(self, layers, state: dict[str, Precision]) -> float:
        """Pooled noise of the weights of ``layers`` and of every site touching one of them."""
        total = 0.0
        sites: set[int] = set()
        for layer in layers:
            p = state.get(layer)
            if p is not None and p.is_integer:
                total += self.weight_noise.get(layer, {}).get("int8", 0.0)
            elif p is Precision.FP16:
                total += self.weight_noise.get(layer, {}).get("fp16", 0.0)
            sites.update(self.nm.sites.layer_sites.get(layer, []))
        for i in sites:
            t = self.nm.sites.site_treatment(self.nm.sites.sites[i], state)
            if t is not None:
                total += self.site_noise[i][t]
        return total


Move = dict  # layer -> new precision (one layer, or a site's producer and consumers together)


def _walk(local: _Local, state: dict[str, Precision], free: list[str], candidates: list[Precision],
          upward: bool) -> list[tuple[Move, float, float]]:
    """Greedy moves ``(changes, noise change, cost change)`` from ``state`` (modified in place).

    Upward, besides one-layer changes, a *site* move lifts a tensor's producer and all its consumers to the top
    candidate at once: the only way to take a tensor out of quantization (e.g. one clipped on new prompts).
    Every move carries the promotions it sets off (``QuantSites.promotions``), so each state on a walk is what the
    exporter runs and its noise and cost are those of that graph.
    """
    freeset = set(free)
    sites = local.nm.sites
    weighted = sites.weighted_layers()
    version: dict[tuple, int] = {}
    heap: list = []
    counter = 0

    def evaluate(changes: Move):
        changes = {n: p for n, p in changes.items() if state[n] is not p}
        changes.update(sites.promotions(ChainMap(changes, state), changes, weighted))  # what the exporter runs
        changes = {n: p for n, p in changes.items() if state[n] is not p}
        if not changes:
            return None
        old = {n: state[n] for n in changes}
        before = local.noise(changes, state)
        c0 = sum(local.costs[n][state[n]] for n in changes)
        state.update(changes)
        dn = local.noise(changes, state) - before
        dc = sum(local.costs[n][state[n]] for n in changes) - c0
        state.update(old)
        if upward:  # most noise removed per cost added first
            return ((dn / dc, dn, dc), changes) if dc > 0 and dn < 0 else None
        return ((dn / -dc, dn, dc), changes) if dc < 0 else None  # least noise added per cost saved first

    def push(key: tuple) -> None:
        nonlocal counter
        if key[0] == "L":
            options = [{key[1]: p} for p in candidates if p != state[key[1]]]
        else:
            site = sites.sites[key[1]]
            group = {n for n in (site.producer, *site.consumers) if n is not None}
            if not group <= freeset:
                return
            options = [{n: candidates[-1] for n in group if state[n] != candidates[-1]}]
        best = None
        for option in options:
            if option:
                r = evaluate(option)
                if r is not None and (best is None or r[0][0] < best[0][0][0]):
                    best = (r, option)
        version[key] = version.get(key, 0) + 1
        if best is not None:
            ((ratio, dn, dc), changes), option = best
            counter += 1
            heapq.heappush(heap, (ratio, counter, version[key], key, option, changes, dn, dc))

    for layer in free:
        push(("L", layer))
    if upward:
        for i in range(len(sites.sites)):
            push(("G", i))
    moves = []
    while heap:
        _, _, ver, key, option, changes, dn, dc = heapq.heappop(heap)
        if ver != version.get(key):
            continue
        now = evaluate(option)  # its promotions reach beyond the re-pushed neighbourhood: re-check, else re-push
        if now is None or now[1] != changes or now[0][1] != dn or now[0][2] != dc:
            push(key)
            continue
        state.update(changes)
        moves.append((changes, dn, dc))
        touched = set(changes)
        for n in changes:
            touched |= local.neighbours.get(n, set())
        for n in touched & freeset:
            push(("L", n))
        if upward:
            for i in {i for n in touched for i in sites.layer_sites.get(n, [])}:
                push(("G", i))
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
        start = nm.sites.settle(start)
        fr.starts[walk] = dict(start)
        noise = float(nm.noise_of(start).sum())
        cost = sum(costs[n][p] for n, p in start.items())
        fr.points.append(Point(noise, cost, walk, 0))
        moves = _walk(local, start, free, candidates, upward)
        fr.moves[walk] = [m[0] for m in moves]
        for k, (_, dn, dc) in enumerate(moves, 1):
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
