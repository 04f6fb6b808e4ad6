"""ResNet-50 int8 on this CPU without rtvision in the way: OpenVINO (NNCF post-training int8, its
own defaults) against torch.ao int8 (rtvision's ``quantize_int8_batch``, the x86 engine), in one
process, interleaved, at batch 1 and 4. It answers one question: is the ratio between the two a
property of rtvision's code or of the CPU?

    python scripts/resnet50_backends.py > report.md   # NNCF's progress bars go to the terminal

Random-init weights (speed only: ImageNet ResNet weights cannot be downloaded here); 32 random
calibration images for both (speed does not depend on what the ranges are).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

ROUNDS, ITERS = 5, 10


def main() -> None:
    import nncf
    import openvino as ov

    from rtvision.benchmark.fingerprint import fingerprint_line, machine_fingerprint
    from rtvision.models.compress import quantize_int8_batch

    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    calib = torch.randn(32, 3, 224, 224)
    ov_int8 = nncf.quantize(ov.convert_model(net, example_input=calib[:1]),
                            nncf.Dataset([calib[i : i + 1].numpy() for i in range(len(calib))]), subset_size=32)
    ao_int8 = quantize_int8_batch(net, calib)
    core = ov.Core()
    runners = {}
    for bs in (1, 4):
        m = ov_int8.clone()
        m.reshape([bs, 3, 224, 224])
        request = core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        x = np.random.default_rng(bs).standard_normal((bs, 3, 224, 224), dtype=np.float32)
        runners[("openvino int8 (NNCF)", bs)] = lambda r=request, x=x: r.infer({0: x})
        xt = torch.from_numpy(x)

        def ao(xt=xt):
            with torch.inference_mode():
                ao_int8(xt)

        runners[("torch.ao int8 (x86)", bs)] = ao
    for run in runners.values():  # warm-up
        for _ in range(3):
            run()
    times: dict = {k: [] for k in runners}
    for _ in range(ROUNDS):  # interleaved rounds: the machine's noise falls on every variant alike
        for key, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(ITERS):
                run()
            times[key].append((time.perf_counter() - t0) / ITERS)
    print(f"# ResNet-50 int8: OpenVINO against torch.ao, this CPU ({time.strftime('%Y-%m-%d')})\n")
    print(f"- machine: {fingerprint_line(machine_fingerprint())}; python {platform.python_version()}; "
          f"torch threads {torch.get_num_threads()}")
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "") if Path("/proc/cpuinfo").exists() else ""
    amx = sorted({f for f in flags.split() if f.startswith("amx")})
    print(f"- Intel AMX (the int8/bf16 matrix units OpenVINO uses where present): {', '.join(amx) if amx else 'none on this CPU'}")
    print(f"- {ROUNDS} interleaved rounds of {ITERS} calls per variant; median round\n")
    print("| variant | batch | img/s | x torch.ao int8 |")
    print("|---|---|---|---|")
    for bs in (1, 4):
        ref = bs / statistics.median(times[("torch.ao int8 (x86)", bs)])
        for name in ("openvino int8 (NNCF)", "torch.ao int8 (x86)"):
            ips = bs / statistics.median(times[(name, bs)])
            print(f"| {name} | {bs} | {ips:.1f} | {ips / ref:.2f} |")


if __name__ == "__main__":
    main()
