"""What machine and software a benchmark ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine_fingerprint() -> dict:
    """CPU model, cores, ISA flags that matter for inference, library versions, threads, GPU."""
    import cv2
    import torch
    import torchvision

    model, flags = _cpuinfo()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover
        physical = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        affinity = None
    fp = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "usable_cpus": affinity,
        "isa": {f: f in flags for f in ISA_FLAGS},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "opencv": cv2.__version__,
        "facenet_pytorch": _version("facenet-pytorch"),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        try:
            props = torch.cuda.get_device_properties(0)
            fp["gpu"] = {
                "name": props.name,
                "memory_mb": props.total_memory / 2**20,
                "count": torch.cuda.device_count(),
                "cuda": torch.version.cuda,
                "driver": _nvidia_driver(),
            }
        except Exception as exc:  # pragma: no cover - report, never fail
            fp["gpu"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return fp


def _nvidia_driver() -> str | None:
    p = Path("/proc/driver/nvidia/version")
    try:
        first = p.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return None
    for tok in first.split():
        if tok[:1].isdigit() and "." in tok:
            return tok
    return first.strip()


def fingerprint_line(fp: dict) -> str:
    """One line for the report header."""
    isa = ", ".join(k for k, v in fp["isa"].items() if v) or "none of " + ", ".join(ISA_FLAGS)
    gpu = fp.get("gpu")
    gpu_txt = f"{gpu.get('name')} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda')})" if gpu and "name" in gpu else "none"
    return (
        f"CPU {fp['cpu_model']} | {fp['physical_cores']} cores / {fp['logical_cpus']} threads "
        f"({fp['usable_cpus']} usable) | ISA: {isa} | GPU: {gpu_txt} | torch {fp['torch']}, "
        f"torchvision {fp['torchvision']}, OpenCV {fp['opencv']}, facenet-pytorch {fp['facenet_pytorch']} | "
        f"torch threads {fp['torch_num_threads']} (interop {fp['torch_num_interop_threads']})"
    )
