"""Merge evaluation folders of shards of one run (``--shard i/n`` on several processes or machines) into one
result and report: same exports, prompt set, seeds and metrics required; every shard exactly once.

:func:`merge_parts` is the merge itself (records in prompt order, FID feature statistics summed, timings summed):
shard folders go through it here, and the Ray executor streams its batches of prompts through it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgefusion.errors import EdgeFusionError
from edgefusion.evaluation.fid import STATS_FLAG, FeatureStats, load_reference_stats
from edgefusion.evaluation.results import RESULTS_FILE, EvalResult, ImageRecord


@dataclass
class EvalPart:
    """What some prompts of one run produced: records per variant key, FID feature statistics per key (sums),
    seconds per key and notes. A shard folder is one; so is a batch of prompts evaluated by Ray tasks."""

    records: dict[str, list[ImageRecord]]
    stats: dict[str, FeatureStats] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def merge_parts(keys: list[str], parts: list[EvalPart]) -> EvalPart:
    """One part from ``parts`` (taken in the order given): records of each key in prompt order, statistics and
    timings summed, notes once each."""
    records: dict[str, list[ImageRecord]] = {k: [] for k in keys}
    stats: dict[str, FeatureStats] = {}
    timings: dict[str, float] = {}
    for part in parts:
        for key, recs in part.records.items():
            records[key].extend(recs)
        for key, s in part.stats.items():
            stats[key] = s if key not in stats else stats[key].merged(s)
        for k, v in part.timings_s.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    for recs in records.values():
        recs.sort(key=lambda rec: rec.prompt_index)
    notes = list(dict.fromkeys(n for part in parts for n in part.notes))
    return EvalPart(records, stats, timings, notes)


def _check_compatible(folders: list[Path], results: list[EvalResult]) -> None:
    first = results[0].spec.fingerprint()
    for folder, r in zip(folders[1:], results[1:]):
        other = r.spec.fingerprint()
        diff = next((k for k in first if first[k] != other[k]), None)
        if diff is not None:
            raise EdgeFusionError(f"'{folder}' is not a shard of the same run as '{folders[0]}' (its {diff} differs)",
                                  "merge only shards made with the same exports, prompt set, seed, steps and metrics")
        if r.shard_count != results[0].shard_count:
            raise EdgeFusionError(f"'{folder}' was split into {r.shard_count} shards but '{folders[0]}' into "
                                  f"{results[0].shard_count}", "merge shards of one --shard i/n split")


def _check_shards(folders: list[Path], results: list[EvalResult], allow_partial: bool) -> list[int]:
    owner: dict[int, Path] = {}
    for folder, r in zip(folders, results):
        for s in r.shards:
            if s in owner:
                raise EdgeFusionError(f"shard {s}/{r.shard_count} is in both '{owner[s]}' and '{folder}'",
                                      "pass each shard once")
            owner[s] = folder
    count = results[0].shard_count
    missing = [s for s in range(1, count + 1) if s not in owner]
    if missing and not allow_partial:
        raise EdgeFusionError(f"shard(s) {', '.join(f'{s}/{count}' for s in missing)} missing from the merge",
                              f"run eval/evaluate.py with --shard {missing[0]}/{count} and pass its folder too, or "
                              "pass --allow-partial")
    return sorted(owner)


def merge_shards(folders: list[str | Path], out: str | Path, fid_ref_stats: str | Path | None = None,
                 allow_partial: bool = False, grid_rows: int = 16, overwrite: bool = False) -> EvalResult:
    """Merge shard folders written by :func:`~edgefusion.evaluation.run.evaluate` into ``out`` (all-or-nothing).

    FID statistics are summed exactly; the reference statistics file recorded by the shards is used unless
    ``fid_ref_stats`` names where it is on this machine.
    """
    from edgefusion.evaluation.plots import write_step_plots
    from edgefusion.evaluation.report import write_report
    from edgefusion.evaluation.summary import fid_stats_path, summarise
    from edgefusion.export.atomic import atomic_dir

    folders = [Path(f) for f in folders]
    if not folders:
        raise EdgeFusionError("no shard folders given", "pass the folders written by eval/evaluate.py --shard i/n")
    results = [EvalResult.load(f) for f in folders]
    _check_compatible(folders, results)
    shards = _check_shards(folders, results, allow_partial)
    spec = results[0].spec
    ref_stats = None
    if spec.metrics.get("fid_ref_stats"):
        path = Path(fid_ref_stats) if fid_ref_stats else Path(spec.metric_files.get("fid_ref_stats", ""))
        if not path.is_file():
            raise EdgeFusionError(f"FID reference statistics '{path}' (used by the shards) do not exist here",
                                  f"pass {STATS_FLAG} FILE to the merge")
        ref_stats = path
    with atomic_dir(Path(out), overwrite, marker=RESULTS_FILE, what="edgefusion evaluation") as stage:
        parts = []
        for folder, r in zip(folders, results):
            for recs in r.records.values():
                for rec in recs:
                    (stage / rec.image).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(folder / rec.image, stage / rec.image)
            stats = {key: FeatureStats.load(fid_stats_path(folder, key)) for key in r.records
                     if fid_stats_path(folder, key).is_file()}
            parts.append(EvalPart(r.records, stats, r.timings_s, r.notes))
        total = merge_parts([v.key for v in spec.variants], parts)
        for key, s in total.stats.items():
            fid_stats_path(stage, key).parent.mkdir(exist_ok=True)
            s.save(fid_stats_path(stage, key))
        notes = total.notes + [f"merged from {len(folders)} folder(s): shards {', '.join(map(str, shards))} of "
                               f"{results[0].shard_count}"]
        merged = EvalResult(spec, results[0].shard_count, shards, total.records, notes, total.timings_s)
        stats = total.stats
        width = next(iter(stats.values())).total.shape[0] if stats else None
        merged.summary = summarise(merged, stage, load_reference_stats(ref_stats, width) if ref_stats else None)
        plots = write_step_plots(merged.summary, spec.timesteps, stage)
        merged.save(stage)
        write_report(merged, stage, plots, grid_rows)
        return merged
