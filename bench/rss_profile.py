"""Per-step RSS profile of a whole ``edgefusion export`` (every process: orchestrator and spawned stages).

A ``sitecustomize`` put on ``PYTHONPATH`` starts, in every Python process of the command, a thread that reads the
process's RSS (``/proc/self/status``) every ``--interval`` seconds together with the main thread's position in
edgefusion's code (the stage function's line, the calls below it and the component being worked on). The command
runs under ``/usr/bin/time -v``; the script prints the steps in order with their peak RSS, and the manifest's
per-stage peaks. No library code is changed to measure.

    python bench/rss_profile.py --trace /tmp/trace -- --model sd-v1.5 --calib-prompts 8 --calib-steps 2 \\
        --verify-prompts 1
    python bench/rss_profile.py --report /tmp/trace          # print the table of an earlier run again
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SITECUSTOMIZE = r'''
import os, sys, threading, time

def _edgefusion_rss_sampler(out_dir, interval):
    import linecache
    main = threading.main_thread()
    path = os.path.join(out_dir, f"{os.getpid()}.tsv")
    t0 = time.time()
    with open(path, "a", buffering=1) as f:
        f.write(f"# {' '.join(sys.argv)[:300]}\n")
        while True:
            with open("/proc/self/status") as st:
                rss = next(int(l.split()[1]) for l in st if l.startswith("VmRSS:")) / 1024.0
            frame, chain, comp = sys._current_frames().get(main.ident), [], ""
            while frame is not None:
                code = frame.f_code
                if "edgefusion" in code.co_filename and "site-packages" not in code.co_filename:
                    chain.append((code.co_name, frame.f_lineno, code.co_filename))
                    if not comp and code.co_name in ("_onnx_stage", "_torch_stage"):
                        comp = str(frame.f_locals.get("comp", ""))
                frame = frame.f_back
            chain.reverse()
            outer = [c for c in chain if c[0] in ("_onnx_stage", "_torch_stage", "_export_into")]
            if outer:
                name, line, fn = outer[-1]
                where = f"{name}:{line} {linecache.getline(fn, line).strip()[:60]}"
                below = [c[0] for c in chain[chain.index(outer[-1]) + 1:]]
            else:
                where, below = "-", [c[0] for c in chain]
            step = " > ".join(below[:2] + (["..", *below[-2:]] if len(below) > 4 else below[2:]))
            f.write(f"{time.time() - t0:.1f}\t{rss:.0f}\t{comp}\t{where}\t{step}\n")
            time.sleep(interval)

if os.environ.get("EDGEFUSION_RSS_TRACE"):
    threading.Thread(target=_edgefusion_rss_sampler, daemon=True,
                     args=(os.environ["EDGEFUSION_RSS_TRACE"],
                           float(os.environ.get("EDGEFUSION_RSS_INTERVAL", "0.2")))).start()
'''


def run(trace: Path, export_args: list[str], interval: float) -> int:
    """Run ``edgefusion export <export_args> --json`` under /usr/bin/time -v with the sampler in every process."""
    trace.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="rss-site-"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, EDGEFUSION_RSS_TRACE=str(trace), EDGEFUSION_RSS_INTERVAL=str(interval),
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgefusion", "export", *export_args, "--json"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (trace / "stdout.json").write_text(res.stdout)
    (trace / "stderr.txt").write_text(res.stderr)
    return res.returncode


def steps(tsv: Path) -> tuple[str, list[dict]]:
    """The process's command line and its consecutive steps: label, start/end seconds, peak and end RSS (MB)."""
    lines = tsv.read_text().splitlines()
    head = lines[0][2:] if lines and lines[0].startswith("# ") else ""
    out: list[dict] = []
    for ln in lines[1:]:
        parts = ln.split("\t")
        if len(parts) != 5:
            continue
        t, rss, comp, where, step = float(parts[0]), float(parts[1]), parts[2], parts[3], parts[4]
        label = f"{comp:12s} {re.sub(r':[0-9]+ ', ' ', where)[:70]:70s} | {step}"
        if out and out[-1]["label"] == label:
            out[-1].update(end=t, peak=max(out[-1]["peak"], rss), last=rss)
        else:
            out.append({"label": label, "start": t, "end": t, "peak": rss, "first": rss, "last": rss})
    return head, out


def report(trace: Path, min_peak_mb: float = 0.0) -> None:
    """Print each process's steps (merged when consecutive), with peak RSS, and the manifest's stage peaks."""
    for tsv in sorted(trace.glob("*.tsv"), key=lambda p: p.stat().st_mtime):
        head, rows = steps(tsv)
        if not rows:
            continue
        print(f"\n## pid {tsv.stem}: {head[:120]}  (peak {max(r['peak'] for r in rows):.0f} MB)")
        print(f"{'start s':>8} {'dur s':>7} {'start MB':>8} {'peak MB':>8} {'end MB':>7}  step")
        for r in rows:
            if r["peak"] >= min_peak_mb or r is rows[-1]:
                print(f"{r['start']:8.1f} {r['end'] - r['start']:7.1f} {r['first']:8.0f} {r['peak']:8.0f} "
                      f"{r['last']:7.0f}  {r['label']}")
    err = (trace / "stderr.txt").read_text() if (trace / "stderr.txt").is_file() else ""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    w = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", err)
    if m:
        print(f"\n/usr/bin/time -v: max RSS {int(m.group(1)):,} kB ({int(m.group(1)) / 1024:.0f} MB), wall {w.group(1)}")
    try:
        man = json.loads((trace / "stdout.json").read_text())
        print("manifest peak_rss_after_stage_mb:", man.get("peak_rss_after_stage_mb"), "peak_rss_mb:",
              man.get("peak_rss_mb"))
    except (OSError, ValueError):
        print("no manifest on stdout (the export failed?)", err[-1500:])


def main() -> None:
    """CLI: run an export with the sampler and print its profile, or print the profile of an earlier trace."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, help="folder for the samples (one .tsv per process)")
    ap.add_argument("--report", type=Path, help="only print the profile of this earlier trace folder")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--min-peak-mb", type=float, default=0.0, help="print only steps peaking above this")
    ap.add_argument("export_args", nargs=argparse.REMAINDER, help="-- then the arguments of `edgefusion export`")
    a = ap.parse_args()
    if a.report:
        report(a.report, a.min_peak_mb)
        return
    if not a.trace:
        ap.error("pass --trace DIR (and -- export arguments) or --report DIR")
    args = a.export_args[1:] if a.export_args[:1] == ["--"] else a.export_args
    rc = run(a.trace, args, a.interval)
    report(a.trace, a.min_peak_mb)
    sys.exit(rc)


if __name__ == "__main__":
    main()
