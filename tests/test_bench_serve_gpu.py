"""The GPU detector benchmark's code, run on the CPU so that CI (which never has a GPU) keeps it working.

The figures here mean nothing (CPU against CPU); the test checks the report's shape and that the sweep,
the fidelity check and the best-batch choice fit together.
"""

from __future__ import annotations

import bench.serve_gpu as serve_gpu
from bench.clips_faces import MODELS_DIR


def test_the_gpu_benchmark_runs_on_the_cpu_and_reports_every_detector(monkeypatch):
    monkeypatch.setattr(serve_gpu, "MIN_SECONDS", 0.0)
    document = serve_gpu.run(models_dir=MODELS_DIR, device="cpu", batches=(1, 2))
    per_detector, together = document["results"][:4], document["results"][4]
    assert [r["name"].split()[0] for r in per_detector] == [
        "meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"]
    for r in per_detector:
        curve = r["params"]["predict_crops_per_s_by_batch"]
        assert set(curve) == {1, 2} and r["params"]["best_batch"] == max(curve, key=curve.get)
        assert abs(r["value"] - max(curve.values())) < 0.1 and r["value"] > 0 and r["peer"]["value"] > 0
        # the same network on the same device: the outputs agree exactly
        assert r["params"]["max_abs_diff_vs_cpu"] == {"tf32_on": 0.0, "tf32_off": 0.0}
    assert min(r["value"] for r in per_detector) <= together["value"] <= max(r["value"] for r in per_detector)
