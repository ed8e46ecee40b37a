"""Range estimation methods: how the calibration data become each quantized tensor's ``[lo, hi]``.

A registry of methods (``--calibration-method``), each a function of the streamed statistics:

* ``minmax``: the extremes seen on the calibration set (onnxruntime's and AIMET's default).
* ``mse``: per tensor, the range ``alpha x [min, max]`` (alpha <= 1) with the least squared quantization error on
  the calibration set: clipping where it pays (AIMET's tf_enhanced and onnxruntime's percentile do this by other
  means).
* ``crossval``: per tensor, ``alpha x [min, max]`` with alpha in a grid that also widens the range, chosen by the
  squared error on *held-out calibration prompts* (the prompts are split into folds; each fold is quantized with the
  ranges of the others). It accounts for what min/max and in-sample MSE cannot see: new prompts leave the
  calibration ranges (on the embedded model, 253 of 319 UNet tensors of 8 held-out prompts did, by up to 97% of the
  range), while 8-bit tensors also pay for a wider range in resolution. The error is measured per bit width, so a
  16-bit tensor widens freely and an 8-bit one only where the coverage is worth its resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgefusion.errors import EdgeFusionError
from edgefusion.quant.ranges import RangeStats, collect_clip_errors, collect_range_stats

CLIP_GRID = (0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# candidate (8-bit, 16-bit) widening factors; 16 bits cost almost nothing to widen, 8 bits pay in resolution
CROSSVAL_GRID = ((1.0, 1.0), (1.0, 2.0), (1.15, 2.0), (1.3, 2.0), (1.5, 2.0), (1.3, 3.0))
CROSSVAL_FOLDS = 4
CROSSVAL_SAMPLES = 96  # samples the search runs (spread over prompts and steps); each runs once per candidate
# Compute budget of the search's probe runs (multiply-accumulates of the float graph, summed over candidates and
# samples). Small graphs run all CROSSVAL_SAMPLES (the embedded UNet: 0.10 GMAC per sample, 58 GMAC for 96 x 6);
# a real-size UNet keeps one sample per fold (sd-v1.5 at 512x512: 339 GMAC per sample; its 32-sample export ran
# 192 probe runs of about 50 s each, i.e. hours, before the budget).
CROSSVAL_PROBE_MACS = 2e12


@dataclass
class RangeRule:
    """What a method chose: every tensor's min/max range scaled by a factor, per tensor or per bit width."""

    method: str
    full: dict[str, tuple[float, float]]  # min/max over the calibration set
    alpha: dict[int, float]  # bit width -> factor
    per_tensor: dict[str, float]  # tensor -> factor (overrides ``alpha``)
    measured: dict | None = None  # what the choice was based on (e.g. cross-validated SQNR per candidate)

    def range(self, tensor: str, bits: int) -> tuple[float, float]:
        """The range ``tensor`` is quantized with at ``bits``."""
        return scaled(*self.full[tensor], self.per_tensor.get(tensor, self.alpha.get(bits, 1.0)))

    def ranges(self, act_bits: dict[str, int]) -> dict[str, tuple[float, float]]:
        """Ranges of every tensor of a plan."""
        return {t: self.range(t, b) for t, b in act_bits.items()}

    def summary(self) -> dict:
        """For the manifest: the method, its per-bit-width factors and how many tensors it clipped or widened."""
        return {"method": self.method, "alpha": {str(k): v for k, v in sorted(self.alpha.items())},
                "tensors_rescaled": sum(1 for a in self.per_tensor.values() if a != 1.0),
                **({"measured": self.measured} if self.measured else {})}


@dataclass
class RangeMethod:
    """A named way of choosing ranges; ``min_groups``: how many distinct prompts it needs."""

    name: str
    describe: str
    choose: Callable[..., dict[str, tuple[float, float]]]
    min_groups: int = 1


METHODS: dict[str, "RangeMethod"] = {}
DEFAULT_METHOD = "crossval"


def register(name: str, describe: str, min_groups: int = 1):
    """Decorator registering ``fn(model_path, plan, feeds, stats, progress) -> ranges`` as a method."""
    def deco(fn):
        METHODS[name] = RangeMethod(name, describe, fn, min_groups)
        return fn
    return deco


def get_method(name: str) -> RangeMethod:
    """The method called ``name``, or a one-line error listing the known ones."""
    if name not in METHODS:
        raise EdgeFusionError(f"unknown calibration method '{name}'",
                              f"pass --calibration-method {' | '.join(METHODS)}")
    return METHODS[name]


def resolve_method(name: str | None, n_groups: int) -> RangeMethod:
    """The method to use on calibration data from ``n_groups`` prompts: ``name``, or a one-line error when it needs
    more prompts; ``None`` means the default, or ``minmax`` when there are too few prompts to cross-validate."""
    if name is None:
        m = METHODS[DEFAULT_METHOD]
        return m if n_groups >= m.min_groups else METHODS["minmax"]
    m = get_method(name)
    if n_groups < m.min_groups:
        raise EdgeFusionError(f"calibration method '{name}' needs samples from at least {m.min_groups} prompts, "
                              f"got {n_groups}", f"pass --calib-prompts {m.min_groups} or more, or "
                              "--calibration-method minmax")
    return m


def scaled(lo: float, hi: float, alpha: float) -> tuple[float, float]:
    """The range ``alpha x [lo, hi]`` (scaled about zero, which every quantized range contains)."""
    return lo * alpha, hi * alpha


@register("minmax", "extremes over the calibration set")
def _minmax(model_path, plan, feeds, stats: RangeStats, progress=False):
    return RangeRule("minmax", stats.minmax(), {}, {})


def _best_alpha(model_path, plan, feeds, stats, grid, progress) -> RangeRule:
    full = stats.minmax()
    tensors = [t for t in stats.tensors if t in plan.act_bits]
    cands = {t: [(*scaled(*full[t], a), plan.act_bits[t]) for a in grid] for t in tensors}
    err = collect_clip_errors(model_path, cands, feeds, progress, desc="range search")
    return RangeRule("mse", full, {}, {t: float(grid[int(np.argmin(err[t][:-1]))]) for t in tensors})


@register("mse", "least squared error on the calibration set, clipping the min/max range where it pays")
def _mse(model_path, plan, feeds, stats: RangeStats, progress=False):
    return _best_alpha(model_path, plan, feeds, stats, CLIP_GRID, progress)


def prompt_folds(groups: np.ndarray, folds: int) -> list[np.ndarray]:
    """Sample indices of each fold: whole prompts, dealt round-robin in order of first appearance."""
    order = list(dict.fromkeys(groups.tolist()))
    fold_of = {g: i % folds for i, g in enumerate(order)}
    return [np.flatnonzero([fold_of[g] == f for g in groups.tolist()]) for f in range(folds)]


def spread_subset(stats: RangeStats, limit: int, parts: Sequence[np.ndarray] = ()) -> np.ndarray:
    """At most ``limit`` sample indices, evenly spaced through the set (so every prompt and step keeps some), plus
    one sample of each fold in ``parts`` that the spacing missed (every fold is held out at least once), taken at a
    staggered position (fold k of F: (k + 1/2) / F through the fold), so the added samples cover different steps."""
    n = len(stats.groups)
    if n <= limit:
        return np.arange(n)
    use = np.unique(np.linspace(0, n - 1, limit).round().astype(int))
    missed = [int(p[int(len(p) * (k + 0.5) / len(parts))]) for k, p in enumerate(parts)
              if len(p) and not np.isin(p, use).any()]
    return np.union1d(use, np.asarray(missed, int))


def search_sample_limit(model_path, n_candidates: int, budget: float | None = None,
                        most: int = CROSSVAL_SAMPLES) -> int:
    """How many samples the search may run ``n_candidates`` times each within ``budget`` multiply-accumulates of
    the float graph (default ``CROSSVAL_PROBE_MACS``; ``most`` at the outside; at least 1, the folds add one each
    when the spacing misses them)."""
    import onnx

    from edgefusion.graph.op_graph import build_op_graph

    model = onnx.load(str(model_path), load_external_data=False)
    macs = sum(op.macs for op in build_op_graph(model, Path(model_path).parent.name).ops)
    budget = CROSSVAL_PROBE_MACS if budget is None else budget
    if macs <= 0:
        return most
    return int(max(1, min(most, budget // (macs * max(n_candidates, 1)))))


def crossval_widening(model_path, plan, feeds, stats: RangeStats, progress=False, grid=CROSSVAL_GRID,
                      folds: int = CROSSVAL_FOLDS,
                      limit: int = CROSSVAL_SAMPLES) -> tuple[dict[int, float], dict[str, float], int]:
    """Per bit width, the factor by which the min/max ranges are widened, chosen by the whole graph's output error
    on held-out calibration prompts: every fold of prompts is quantized with the ranges of the other folds, widened
    by each candidate ``(alpha_8bit, alpha_16bit)``, and the candidate with the best pooled SQNR wins. The search
    runs at most ``limit`` samples, fewer when the candidates' probe runs would exceed ``CROSSVAL_PROBE_MACS``
    (:func:`search_sample_limit`). Returns the factors, the SQNR each candidate measured and how many samples ran."""
    from edgefusion.quant.emit import emit_qdq, qparam_feeds
    from edgefusion.runtime.session import open_session, release_freed_memory, run_session

    widths = sorted(set(plan.act_bits.values()))
    cands = sorted({tuple(a if b in widths else 1.0 for a, b in zip(c, (8, 16))) for c in grid})
    parts = prompt_folds(stats.groups, min(folds, len(np.unique(stats.groups))))
    use = spread_subset(stats, min(limit, search_sample_limit(model_path, len(cands))), parts)
    fsess = open_session(model_path)  # float outputs first: the two sessions never hold their weights together
    refs = {int(i): run_session(fsess, feeds[i])[0] for i in use}
    del fsess
    release_freed_memory()
    sig = sum(float((r.astype(np.float64) ** 2).sum()) for r in refs.values())
    err = np.zeros(len(cands))
    probe = Path(model_path).with_name(Path(model_path).stem + ".probe.onnx")
    try:
        emit_qdq(model_path, probe, plan, None, qparams_as_inputs=True)
        release_freed_memory()  # the emission's freed weight buffers, before the probe session's weights come
        qsess = open_session(probe)
        for held in parts:
            rest = np.setdiff1d(np.arange(len(stats.groups)), held)
            lo, hi = stats.lo[rest].min(0), stats.hi[rest].max(0)
            base = {t: (lo[j], hi[j]) for j, t in enumerate(stats.tensors)}
            qp = [qparam_feeds(plan, {t: scaled(*base[t], c[0] if plan.act_bits[t] == 8 else c[1])
                                      for t in plan.act_bits}) for c in cands]
            for i in np.intersect1d(held, use):
                ref = refs[int(i)].astype(np.float64)
                for k, q in enumerate(qp):
                    out = run_session(qsess, {**feeds[i], **q})[0]
                    err[k] += float(((ref - out) ** 2).sum())
        del qsess
    finally:
        for f in probe.parent.glob(probe.name + "*"):
            f.unlink()
        release_freed_memory()
    db = 10 * np.log10(max(sig, 1e-30) / np.maximum(err, 1e-30))
    best = cands[int(np.argmax(db))]
    measured = {f"x{a8:g}/x{a16:g}": round(float(d), 2) for (a8, a16), d in zip(cands, db)}
    return {8: best[0], 16: best[1]}, measured, int(len(use))


@register("crossval", "min/max widened per bit width by the factors whose ranges quantize held-out calibration "
          "prompts best (whole-graph output error)", min_groups=2)
def _crossval(model_path, plan, feeds, stats: RangeStats, progress=False):
    alpha, measured, samples = crossval_widening(model_path, plan, feeds, stats, progress)
    return RangeRule("crossval", stats.minmax(), alpha, {}, {"crossval_sqnr_db": measured,
                                                              "crossval_samples": samples})


def estimate_ranges(model_path: Path, plan, feeds: Sequence[dict], groups: Sequence[int] | None,
                    method: str | None = None, progress: bool = False,
                    desc: str = "ranges", tensors: list[str] | None = None) -> RangeRule:
    """How ``method`` ranges the tensors ``plan`` quantizes (``plan.act_bits``: tensor -> 8 | 16), from ``feeds``
    (``groups``: the prompt each came from; ``None``: one prompt). ``method``: see :func:`resolve_method`.
    ``tensors``: collect min/max of these too (default: the plan's)."""
    feeds = list(feeds)
    groups = [0] * len(feeds) if groups is None else list(groups)
    m = resolve_method(method, len(set(groups)))
    names = list(dict.fromkeys([*plan.act_bits, *(tensors or [])]))
    stats = collect_range_stats(Path(model_path), names, feeds, groups, progress, desc)
    return m.choose(Path(model_path), plan, feeds, stats, progress)
