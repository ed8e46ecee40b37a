"""--executor ray on the tiny preset: a local Ray instance with 2 workers (started and stopped by this module), the
evaluation equal to the local executor's, a worker killed mid-task retried with the same result, the sensitivity
sweep's chunks equal to the local sweep within float summation tolerance, and bad input (an address that does not
answer, Ray not installed) as one-line errors.

Skipped only when Ray is not installed (CI installs the dev extra, which has it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from eval_weights import tiny_clip, tiny_feature_net  # noqa: E402

from edgefusion.errors import EdgeFusionError  # noqa: E402
from edgefusion.evaluation.options import MetricOptions  # noqa: E402
from edgefusion.evaluation.prompts import read_prompt_file  # noqa: E402
from edgefusion.evaluation.results import EvalResult  # noqa: E402
from edgefusion.evaluation.run import evaluate  # noqa: E402
from edgefusion.executors.spec import ExecutorSpec, check_executor, executor_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SEED = 5
PROMPTS = ["a red fox at sunset", "a large red circle in the center on a white background", "a bowl of ramen",
           "an astronaut riding a horse"]
RAY = ExecutorSpec("ray")


@pytest.fixture(scope="module", autouse=True)
def one_thread_like_the_workers():
    """Local reference runs with one thread, as each Ray worker does (one CPU each): the comparisons below are bit for
    bit, and results depend on the thread count through float rounding (a last-bit difference in an activation can
    move it to the neighbouring quantization bin, which changes a small source's noise energy by up to ~20%)."""
    import torch

    saved = {k: os.environ.get(k) for k in ("EDGEFUSION_ORT_THREADS", "OMP_NUM_THREADS")}
    threads = torch.get_num_threads()
    os.environ.update(EDGEFUSION_ORT_THREADS="1", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """A local Ray instance with 2 worker CPUs for this module; its workers run ``ray_fault_hook.install`` (armed
    only by the killed-worker test). Shut down at the end of the module."""
    fault = tmp_path_factory.mktemp("fault")
    worker_tmp = tmp_path_factory.mktemp("worker-tmp")  # where workers unpack folders shipped through the store
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {"EDGEFUSION_TEST_FAULT_DIR": str(fault), "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false",
           "TMPDIR": str(worker_tmp)}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2 ** 20, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "ray_fault_hook.install"})
    try:
        yield fault, worker_tmp
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def eval_inputs(tiny_exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("rayeval")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    metrics = MetricOptions(clip_model=tiny_clip(root / "clip"), fid_inception=tiny_feature_net(root / "net.pt"))
    return [tiny_exports["default"], tiny_exports["w8a8"]], read_prompt_file(prompts), metrics


@pytest.fixture(scope="module")
def local_eval(eval_inputs, tmp_path_factory):
    exports, prompts, metrics = eval_inputs
    out = tmp_path_factory.mktemp("local") / "eval"
    return evaluate(exports, prompts, out, seed=SEED, metrics=metrics, float_onnx=False, progress=False), out


def _same_result(got: EvalResult, want: EvalResult, got_dir: Path, want_dir: Path) -> None:
    assert got.records == want.records  # every per-image figure, per-step errors, CLIP scores
    diff = {(k, m): (got.summary[k].get(m), v) for k, row in want.summary.items() for m, v in row.items()
            if got.summary[k].get(m) != v}
    assert not diff and got.summary.keys() == want.summary.keys(), diff  # every summary figure, to the last digit
    assert got.spec.timesteps == want.spec.timesteps
    for key, recs in want.records.items():
        for rec in recs:
            assert (got_dir / rec.image).read_bytes() == (want_dir / rec.image).read_bytes(), rec.image
    for npz in sorted((want_dir / "fid").glob("*.npz")):  # FID feature sums, bit for bit
        a, b = np.load(npz), np.load(got_dir / "fid" / npz.name)
        assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files), npz.name


def test_evaluation_on_ray_equals_local(ray_instance, eval_inputs, local_eval, tmp_path):
    exports, prompts, metrics = eval_inputs
    want, want_dir = local_eval
    got = evaluate(exports, prompts, tmp_path / "ray", seed=SEED, metrics=metrics, float_onnx=False,
                   progress=False, executor=RAY)
    assert len(got.records["w8a8"]) == len(PROMPTS)
    assert any("Ray tasks" in n for n in got.notes)
    _same_result(got, want, tmp_path / "ray", want_dir)
    assert EvalResult.load(tmp_path / "ray").records == want.records  # what was written, too


def test_a_killed_worker_is_retried_with_the_same_result(ray_instance, eval_inputs, local_eval, tmp_path,
                                                         monkeypatch):
    """A worker SIGKILLed in the middle of a prompt; the inputs go through the object store this time (as across
    machines) rather than by path."""
    from edgefusion.executors.folders import CACHE_PREFIX, SHIP_ENV

    fault, worker_tmp = ray_instance
    exports, prompts, metrics = eval_inputs
    want, want_dir = local_eval
    monkeypatch.setenv(SHIP_ENV, "store")
    (fault / "arm").write_text("")
    try:
        got = evaluate(exports, prompts, tmp_path / "ray", seed=SEED, metrics=metrics, float_onnx=False,
                       progress=False, executor=RAY)
    finally:
        (fault / "arm").unlink()
    killed = int((fault / "fired").read_text())  # a worker did die by SIGKILL in the middle of a prompt
    assert killed > 0
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    _same_result(got, want, tmp_path / "ray", want_dir)
    unpacked = sorted(p.name for p in worker_tmp.glob(f"{CACHE_PREFIX}*"))
    assert len(unpacked) >= 3, unpacked  # the two exports and the CLIP folder reached the workers as copies


def test_sweep_chunks_on_ray_equal_local(ray_instance, tiny_float_graphs, tiny_calibration, tmp_path):
    from edgefusion.sensitivity import profiler
    from edgefusion.sensitivity.cost import measure_layer_stats
    from edgefusion.sensitivity.ray_sweep import plan_pieces
    from edgefusion.sensitivity.report import Provenance, SensitivityReport
    from edgefusion.sensitivity.simulate import Simulator

    cal, ver = tiny_calibration
    sim = Simulator(tiny_float_graphs["unet"], "unet", ver.samples["unet"][:8], cal.samples["unet"][:4],
                    memory_mb=300)
    assert 1 < sim.per_chunk < 8  # several chunks, several samples each
    assert len(plan_pieces(list(range(8)), sim.per_chunk, 2)) >= 2  # both workers get work
    prov = Provenance("tiny", True, sim.graph.weights_digest(), {"digest": cal.digest()}, {}, {"probes": 2})
    stats = measure_layer_stats(sim)
    local = profiler.sweep(sim, profiler.new_report(sim, prov, list(range(8)), stats), tmp_path / "l.json", 2,
                           seed=3)
    path = tmp_path / "r.json"
    on_ray = profiler.sweep(sim, profiler.new_report(sim, prov, list(range(8)), stats), path, 2, seed=3,
                            executor=RAY)
    assert on_ray.done_samples == local.done_samples == list(range(8))
    assert SensitivityReport.load(path).noise == on_ray.noise  # the checkpoint holds the result
    assert set(on_ray.noise) == set(local.noise) and len(local.noise) > 10
    np.testing.assert_allclose(on_ray.signal, local.signal, rtol=1e-12)
    for key, row in local.noise.items():
        np.testing.assert_allclose(on_ray.noise[key], row, rtol=1e-9, atol=0, err_msg=key)
    # the comparison can fail: another probe seed moves the estimates far beyond the tolerance
    other = profiler.sweep(sim, profiler.new_report(sim, prov, list(range(8)), stats), tmp_path / "o.json", 2,
                           seed=4)
    assert any(not np.allclose(other.noise[k], r, rtol=1e-9, atol=0) for k, r in local.noise.items())


def test_resumed_sweep_on_ray_profiles_only_what_is_left(ray_instance, tiny_float_graphs, tiny_calibration,
                                                         tmp_path, request):
    """A local driver killed after its first chunk leaves a checkpoint; the Ray sweep resumes it and profiles only
    the samples left, with the same totals as an undisturbed sweep."""
    from edgefusion.sensitivity import profiler
    from edgefusion.sensitivity.cost import measure_layer_stats
    from edgefusion.sensitivity.report import Provenance, SensitivityReport
    from edgefusion.sensitivity.simulate import Simulator

    cal, ver = tiny_calibration
    sim = Simulator(tiny_float_graphs["unet"], "unet", ver.samples["unet"][:8], cal.samples["unet"][:4],
                    memory_mb=300)
    prov = Provenance("tiny", True, sim.graph.weights_digest(), {"digest": cal.digest()}, {}, {"probes": 2})
    stats = measure_layer_stats(sim)
    whole = profiler.sweep(sim, profiler.new_report(sim, prov, list(range(8)), stats), tmp_path / "w.json", 2)
    path = tmp_path / "p.json"
    calls = request.getfixturevalue("sweep_dies_after_one_chunk")  # after the undisturbed sweep above
    with pytest.raises(KeyboardInterrupt):
        profiler.sweep(sim, profiler.new_report(sim, prov, list(range(8)), stats), path, 2)
    partial = SensitivityReport.load(path)
    assert partial.done_samples == calls[0] and 0 < len(calls[0]) < 8
    resumed = profiler.sweep(sim, partial, path, 2, executor=RAY)
    assert resumed.done_samples == list(range(8)) and len(calls) == 1  # the Ray tasks do not call the local loop
    for key, row in whole.noise.items():
        np.testing.assert_allclose(resumed.noise[key], row, rtol=1e-9, atol=0, err_msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    port = _free_port()  # nothing listens there
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "import sys\nfrom edgefusion.cli.main import main\n"
                          "sys.exit(main(sys.argv[1:]))", "profile", "--model", "tiny", "--out", str(tmp_path / "p"),
                          "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--no-progress"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    took = time.perf_counter() - t0
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port} does not answer" in lines[0] and "ray start --head" in lines[0], \
        res.stderr
    assert took < 30, took  # interpreter start and imports included; the connection check itself is 3 s at most
    assert not (tmp_path / "p").exists()
    t0 = time.perf_counter()
    with pytest.raises(EdgeFusionError, match="does not answer"):
        check_executor(executor_spec("ray", f"127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 5
    with socket.socket() as server:  # something listens, but it is not Ray: refused as well, in seconds
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        t0 = time.perf_counter()
        with pytest.raises(EdgeFusionError, match="does not answer as a Ray cluster"):
            check_executor(executor_spec("ray", f"127.0.0.1:{server.getsockname()[1]}"))
        assert time.perf_counter() - t0 < 15
    with pytest.raises(EdgeFusionError, match="neither auto nor HOST:PORT"):
        executor_spec("ray", "not an address")
    with pytest.raises(EdgeFusionError, match="only applies to --executor ray"):
        executor_spec("local", "auto")


def test_executor_ray_without_ray_names_the_extra(tmp_path):
    """Ray made unimportable in a fresh interpreter (``sys.modules['ray'] = None``): evaluate and profile refuse in
    one line naming the extra, before any work."""
    code = ("import sys\nsys.modules['ray'] = None\nsys.argv = sys.argv[1:]\n"
            "import runpy\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    exports = ROOT / "nonexistent-export"
    evaluate_cmd = [sys.executable, "-c", code, str(ROOT / "eval" / "evaluate.py"), str(exports), "--out",
                    str(tmp_path / "e"), "--executor", "ray", "--no-progress"]
    profile_cmd = [sys.executable, "-c", "import sys\nsys.modules['ray'] = None\n"
                   "from edgefusion.cli.main import main\nsys.exit(main(sys.argv[1:]))", "profile", "--model",
                   "tiny", "--out", str(tmp_path / "p"), "--executor", "ray", "--no-progress"]
    for cmd in (evaluate_cmd, profile_cmd):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1, res.stderr
        assert 'pip install "edgefusion[ray]"' in lines[0] and "Ray" in lines[0], lines[0]
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


def test_help_imports_neither_torch_nor_ray():
    code = ("import sys, contextlib, io\nfrom edgefusion.cli.main import main\nbuf = io.StringIO()\n"
            "for argv in (['--help'], ['profile', '--help'], ['export', '--help']):\n"
            "    with contextlib.redirect_stdout(buf):\n        try:\n            main(argv)\n"
            "        except SystemExit:\n            pass\n"
            "assert buf.getvalue().count('--executor {local,ray}') >= 2 and '--ray-address' in buf.getvalue()\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


def test_export_auto_hands_the_executor_to_its_profiling_step(monkeypatch):
    """``export --mpq-policy auto --executor ray``: the request the isolated auto stage receives names the executor
    (the manifest's record of the request does not); ``--executor ray`` with a fixed policy is refused."""
    import edgefusion.isolated as isolated
    from edgefusion.sensitivity.auto_export import AutoRequest, policy_or_auto

    seen = []

    def fake_run_isolated(fn, stage, request, *args, **kwargs):
        seen.append(request)
        raise RuntimeError("stop here")

    monkeypatch.setattr(isolated, "run_isolated", fake_run_isolated)
    req = policy_or_auto("auto", executor=ExecutorSpec("ray", None, 2))
    assert isinstance(req, AutoRequest) and "executor" not in req.to_dict()
    with pytest.raises(RuntimeError, match="stop here"):
        req.choose("/nonexistent-stage", {}, {}, 0)
    assert ExecutorSpec.from_dict(seen[0]["executor"]) == ExecutorSpec("ray", None, 2)
    assert policy_or_auto("auto").executor is None  # local: nothing recorded, nothing imported
    with pytest.raises(EdgeFusionError, match="--executor ray only applies to --mpq-policy auto"):
        policy_or_auto("default", executor=ExecutorSpec("ray"))


def test_profile_command_on_ray(tmp_path):
    """`edgefusion profile --executor ray` end to end on `tiny`: its stage process (TMPDIR inside the staging
    folder) starts its own local Ray instance and writes a complete report; nothing of Ray is left behind in the
    output or under a short temporary folder."""
    import glob

    before = set(glob.glob("/tmp/efray-*"))
    code = "import sys\nfrom edgefusion.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    res = subprocess.run([sys.executable, "-c", code, "profile", "--model", "tiny", "--calib-prompts", "2",
                          "--calib-steps", "2", "--verify-prompts", "1", "--probes", "1", "--max-samples", "8",
                          "--no-progress", "--out", str(tmp_path / "p"), "--executor", "ray"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    from edgefusion.sensitivity.report import SensitivityReport

    rep = SensitivityReport.load(tmp_path / "p")
    assert rep.complete and rep.done_samples == rep.profiled_samples and len(rep.profiled_samples) >= 2
    assert not any("ray" in p.name.lower() for p in (tmp_path / "p").rglob("*"))
    assert set(glob.glob("/tmp/efray-*")) == before
