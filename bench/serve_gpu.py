"""``deepwatch bench serve-gpu``: the four MesoNet detectors on a GPU, per detector, over a sweep of batch sizes.

Issue 7 asks, where a GPU is lent, for each detector's crops/s and the batch size that maximizes it. Each point
is ``Detector.predict`` exactly as a Serve replica given a GPU calls it: uint8 crops from host memory, copied to
the device, the network, P(fake) back on the host. A second sweep times the network alone on crops already on
the device, so the copy's share is visible. The peer, measured in the same run, is the same detectors on this
machine's CPUs at ``serve_batch_max_crops`` (the batch the CPU deployments use).

Fidelity: the networks are checked against their CPU outputs on the same crops, with TF32 convolutions on
(PyTorch's default for cuDNN) and off; the port's promise is 1e-4 of the Keras outputs.

This runs without Ray (the Ray wheel alone is larger than what may travel to the lent GPU machine), and needs
only torch, numpy, h5py, Pillow and OpenCV, so ``python -m bench.serve_gpu --models DIR`` runs on a bare CUDA
image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import serve as bench_serve
from bench.common import report, result

BATCHES = (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
CPU_BATCH = 32  # the settings' default serve_batch_max_crops
MIN_SECONDS = 0.4  # per timed point: long enough to average many kernel launches at the small batches


def log(message: str) -> None:
    print(f"bench serve-gpu: {message}", file=sys.stderr, flush=True)


def rate(call: Any, n_per_call: int, sync: Any) -> float:
    """Items/s of ``call()``: one warm-up, then as many calls as fit in MIN_SECONDS (at least 3)."""
    call()
    sync()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < MIN_SECONDS:
        call()
        calls += 1
    sync()
    return calls * n_per_call / (time.perf_counter() - started)


def load(models_dir: Path, device: str) -> list[Any]:
    from serve.detectors.mesonet import DETECTORS

    out = []
    for cls in DETECTORS:  # no cache directory: the converter runs, as on a first start
        detector = cls()
        detector.to_device(device)
        detector.load(models_dir, cache_dir=None)
        out.append(detector)
    return out


def run(
    quick: bool = False, models_dir: Path | None = None, device: str = "cuda", batches: tuple[int, ...] = BATCHES
) -> dict[str, Any]:
    """``device`` and ``batches`` exist for the smoke test, which runs this code on the CPU."""
    import torch

    from serve.detectors.mesonet import to_tensor

    models_dir = models_dir or bench_serve.models_dir()
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench serve-gpu needs a CUDA GPU (torch.cuda.is_available() is False)")
    batches = tuple(b for b in batches if not quick or b <= 256)
    crops = bench_serve.face_crops(max(batches), models_dir)
    n_ref = min(256, max(batches))  # crops compared with the CPU's outputs
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    log(f"CPU peer at batch {CPU_BATCH} on {torch.get_num_threads()} threads")
    cpu = load(models_dir, "cpu")
    cpu_rate = {d.name: rate(lambda d=d: d.predict(crops[:CPU_BATCH]), CPU_BATCH, lambda: None) for d in cpu}
    reference = {d.name: d.predict(crops[:n_ref]) for d in cpu}

    gpu = load(models_dir, device)
    fidelity: dict[str, dict[str, float]] = {}
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        for d in gpu:
            diff = float(np.max(np.abs(d.predict(crops[:n_ref]) - reference[d.name])))
            fidelity.setdefault(d.name, {})["tf32_on" if tf32 else "tf32_off"] = diff

    sweeps: dict[str, dict[str, dict[int, float]]] = {}
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        mode = "tf32_on" if tf32 else "tf32_off"
        for d in gpu:
            log(f"{d.name} ({mode}): predict and network-only over batches {batches}")
            end_to_end, network = {}, {}
            for b in batches:
                end_to_end[b] = rate(lambda d=d, b=b: d.predict(crops[:b]), b, sync)
                x = to_tensor(crops[:b], torch.device(device))
                if d.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)

                def forward(x: torch.Tensor = x, d: Any = d) -> None:
                    with torch.inference_mode():
                        d.net(x)

                network[b] = rate(forward, b, sync)
            sweeps.setdefault(d.name, {})[f"predict_{mode}"] = end_to_end
            sweeps[d.name][f"network_only_{mode}"] = network

    # The figure reported is the exact mode (TF32 off): the one whose outputs keep the port's 1e-4 promise.
    results = []
    for d in gpu:
        curve = sweeps[d.name]["predict_tf32_off"]
        best = max(curve, key=lambda b: curve[b])
        results.append(result(
            f"{d.name} on the GPU through Detector.predict (host crops in, P(fake) out), best batch",
            curve[best], "crops/s", "higher", f"the same detector on {os.cpu_count()} CPUs at batch {CPU_BATCH}",
            cpu_rate[d.name],
            {"best_batch": best, "tf32": False,
             "predict_crops_per_s_by_batch": {b: round(v, 1) for b, v in curve.items()},
             "network_only_crops_per_s_by_batch": {
                 b: round(v, 1) for b, v in sweeps[d.name]["network_only_tf32_off"].items()},
             "predict_tf32_on_crops_per_s_by_batch": {
                 b: round(v, 1) for b, v in sweeps[d.name]["predict_tf32_on"].items()},
             "max_abs_diff_vs_cpu": fidelity[d.name], "min_seconds_per_point": MIN_SECONDS},
        ))
    together = 4 / sum(1 / r["value"] for r in results)  # the four in turn, each at its best batch
    peer_together = 4 / sum(1 / v for v in cpu_rate.values())
    results.append(result(
        "four MesoNet detectors in turn on the GPU, detector-crops/s at each one's best batch",
        together, "crops/s", "higher", f"the same on {os.cpu_count()} CPUs at batch {CPU_BATCH}", peer_together,
        {"from": "the per-detector figures above (harmonic combination)"},
    ))
    out = report("serve-gpu", results)
    out["machine"]["torch"] = torch.__version__
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="models directory (default: as the CLI's)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.models), indent=2))


if __name__ == "__main__":
    main()
