"""Build the models a run needs from its settings: the classifier (network, backend, precision,
int8 calibration and the disk cache) and the face stage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backends import Target, resolve_target
from ..config import ModelConfig, default_cache_dir
from ..errors import ModelError, UsageError
from . import artifact, compress, zoo
from .classifier import Classifier, Preprocess, read_labels
from ..faces.protocols import FaceStageFactory
from ..faces.stage import build_face_setup

log = logging.getLogger(__name__)

CALIB_CROPS_PER_FRAME = 3  # see compress.calibration_images
# Op types NNCF leaves in float, per network: what keeps int8 within a point of fp32 top-1.
# EfficientNet-Lite0, 500 labelled photos, calibrated on the 1080p clip: top-1 0.852 with
# every op int8, 0.868 with the depthwise convolutions in float, against 0.870 in fp32.
INT8_FLOAT_OPS = {"efficientnet_lite0": ("GroupConvolution",)}
# torch.ao int8 (--backend torch) quantizes the ResNets well; on these it does not (500 photos,
# top-1 against fp32), so it refuses them rather than serve a broken model.
TORCH_INT8_REFUSED = {
    "mobilenet_v2": "loses 6 points of top-1 (0.744 against 0.806)",
    "efficientnet_lite0": "loses 19 points of top-1 (0.572 against 0.764) and runs 10x slower than fp32",
}


def resolve_device(name: str) -> torch.device:
    """The face detector's device: ``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


@dataclass
class Models:
    """The networks a run uses, built once (a bench reuses them across runs), plus what the user
    must be told about them. Nothing here holds a run's state: each run makes its own face stage
    (``faces.new_stage()``).

    device: the face detector's device (the classifier's is ``classifier.device``).
    """

    device: torch.device
    classifier: Classifier | None
    faces: FaceStageFactory | None
    warnings: list[str] = field(default_factory=list)

    @property
    def classifier_variant(self) -> str:
        return self.classifier.variant if self.classifier is not None else "off"

    @property
    def face_mode(self) -> str:
        return self.faces.description if self.faces is not None else "off"


def warm_up(models: Models, resolution_wh: tuple[int, int] | None, batch: int) -> None:
    """Run every model once on blank frames of the source's size, before a live source's capture
    starts: a device's first calls cost far more than the next ones (CUDA loads its kernels and
    makes its library handles on first use, seconds in all; the CPU backends build their
    per-shape kernels), and a live source would drop the frames that arrive meanwhile.
    Stand-in models without a ``warm_up`` (the tests' fakes) are left alone."""
    if resolution_wh is None or min(resolution_wh) <= 0:  # a stream whose size comes with its first frame
        return
    w, h = resolution_wh
    if isinstance(models.classifier, Classifier):
        blank = np.zeros((h, w, 3), np.uint8)
        models.classifier.logits(models.classifier.prepare([blank] * max(1, batch)))
    detector = getattr(models.faces, "detector", None)
    if hasattr(detector, "warm_up"):
        detector.warm_up(h, w)


def calibration_frames(source, info, n: int) -> tuple[str, Callable[[], list[np.ndarray]]]:
    """(cache key part, frame getter) for int8 calibration on the user's own source.

    Files: ``n`` frames spread over the whole clip, read through a separate capture. Live
    sources: the next ``n`` frames of the (already open) source, read before capture starts.
    """
    if info is not None and info.kind == "file":
        path = Path(info.name).resolve()
        st = path.stat()
        return f"file:{path}:{st.st_size}:{int(st.st_mtime)}", lambda: compress.sample_video_frames(str(path), n)

    def read_live() -> list[np.ndarray]:
        frames = []
        for _ in range(n * 3):
            img = source.read()
            if img is not None:
                frames.append(img)
            if len(frames) == n:
                break
        return frames

    return f"{info.kind}:{info.name}" if info is not None else "unknown", read_live


def _labels(cfg: ModelConfig, names: list[str]) -> list[str]:
    if not cfg.labels_path:
        return names
    labels = read_labels(cfg.labels_path)
    if len(labels) != len(names):
        raise ModelError(f"{cfg.labels_path} has {len(labels)} names but the model has {len(names)} classes")
    return labels


def _cache_dir(cfg: ModelConfig) -> Path:
    return Path(cfg.cache_dir or default_cache_dir())


def openvino_model(cfg: ModelConfig, choice: zoo.WeightsChoice, precision: str, preprocess: Preprocess, calib,
                   cache_dir: Path):
    """(OpenVINO model without preprocessing, class names): from the disk cache, else converted
    from the torch network (and for int8, quantized by NNCF on calibration frames) and cached.
    fp32 and bf16 share one cached fp32 model (bf16 is a compile-time hint)."""
    from ..backends import openvino_runtime as ovr

    stored = "int8" if precision == "int8" else "fp32"
    calib_key, frames_fn = (None, None)
    if stored == "int8":
        source, info = calib if calib is not None else (None, None)
        if info is None or (source is None and info.kind != "file"):
            raise UsageError("int8 needs calibration frames from a source")
        calib_key, frames_fn = calibration_frames(source, info, cfg.calib_frames)
    key = artifact.cache_key(kind="openvino", arch=choice.arch, weights=choice.weights_id, precision=stored,
                             calib=calib_key, frames=cfg.calib_frames if stored == "int8" else None,
                             crops=CALIB_CROPS_PER_FRAME, float_ops=list(INT8_FLOAT_OPS.get(choice.arch, ())),
                             preprocess=preprocess.to_dict(), format=artifact.VERSION, versions=artifact.versions())
    path = cache_dir / f"{choice.arch}-{stored}-openvino-{key[:20]}.rtv"
    with artifact.entry_lock(path):
        art = artifact.read_cache_entry(path, key)
        if art is not None:
            log.info("%s %s OpenVINO model from cache %s", choice.arch, stored, path)
            return art.openvino_model(), art.class_names
        net = zoo.build_network(choice.arch, choice.weights)
        model = ovr.export(net.module, preprocess.crop)
        calibration = None
        if stored == "int8":
            frames = frames_fn()
            if not frames:
                raise UsageError("int8 calibration read no frames from the source")
            images = compress.calibration_images(frames, CALIB_CROPS_PER_FRAME)
            batch = preprocess.batch(images).numpy()
            log.info("int8 calibration (NNCF): %d frames, %d images", len(frames), len(images))
            model = ovr.quantize(model, batch, float_ops=INT8_FLOAT_OPS.get(choice.arch, ()))
            calibration = {"source": calib_key, "frames": len(frames), "images": len(images)}
        try:
            artifact.write(path, artifact.openvino_payload(
                model, arch=choice.arch, precision=stored, class_names=net.categories, preprocess=preprocess.to_dict(),
                calibration=calibration, metadata={"weights": choice.weights_id, "cache_key": key}))
        except OSError as exc:
            log.warning("model cache unavailable (%s); the next start will convert again", exc)
    return model, net.categories


def build_classifier(cfg: ModelConfig, calib=None, warn: Callable[[str], None] | None = None) -> Classifier:
    """The classifier ``cfg`` asks for. ``calib``: (source, info) for int8 calibration.
    ``warn``: called with what the user must be told (a fallback). Raises WeightsUnavailable,
    ModelError or UsageError."""
    warn = warn or log.warning
    if cfg.model_path:
        return load_for_pipeline(cfg.model_path, cfg)
    target = resolve_target(cfg.device, cfg.backend, cfg.precision)
    choice = zoo.choose_weights(cfg.classifier, cfg.weights, warn)
    name = choice.weights.partition(":")[2] if zoo.is_imagenet(choice.weights) else ""
    preprocess = zoo.preprocess_of(choice.arch, name or None)
    cache_dir = _cache_dir(cfg)
    if target.backend == "openvino":
        from ..backends.openvino_runtime import OpenVINORuntime, with_preprocessing

        model, names = openvino_model(cfg, choice, target.precision, preprocess, calib, cache_dir)
        runtime = OpenVINORuntime(with_preprocessing(model, preprocess), preprocess, target.precision,
                                  cache_dir=str(cache_dir / "openvino"))
        return Classifier(choice.arch, runtime, _labels(cfg, names), preprocess, choice.weights_id,
                          f"{choice.arch} {target.precision}")
    return torch_classifier(cfg, target, choice, preprocess, calib, cache_dir)


def torch_classifier(cfg: ModelConfig, target: Target, choice: zoo.WeightsChoice, preprocess: Preprocess, calib,
                     cache_dir: Path) -> Classifier:
    from ..backends.torch_runtime import TorchRuntime, place

    net = zoo.build_network(choice.arch, choice.weights)
    if target.precision == "int8":
        if choice.arch in TORCH_INT8_REFUSED:
            raise UsageError(f"torch.ao int8 cannot quantize {choice.arch} well (it {TORCH_INT8_REFUSED[choice.arch]}, "
                             "measured on labelled photos); use --backend openvino (the default on the CPU) or fp32")
        source, info = calib if calib is not None else (None, None)
        if info is None or (source is None and info.kind != "file"):
            raise UsageError("int8 needs calibration frames from a source")
        key, frames = calibration_frames(source, info, cfg.calib_frames)
        try:
            module = artifact.torch_int8_cached(net.module, choice.arch, choice.weights_id, key, frames,
                                                preprocess.to_dict(), cache_dir, n_frames=cfg.calib_frames,
                                                class_names=net.categories)
        except OSError as exc:
            log.warning("int8 cache unavailable (%s); quantizing without it", exc)
            module = compress.quantize_int8(net.module, frames(), preprocess.to_dict())
    else:
        module = place(net.module, target.device, target.precision)
    runtime = TorchRuntime(module, preprocess, target.device, target.precision)
    return Classifier(choice.arch, runtime, _labels(cfg, net.categories), preprocess, choice.weights_id,
                      f"{choice.arch} {target.precision}")


def load_for_pipeline(path: str, cfg: ModelConfig) -> Classifier:
    """An ``--model`` artifact as the pipeline's classifier, on the backend it was built for.
    Raises ModelError (exit 5) with one line for a bad artifact, UsageError for flags it cannot
    run with."""
    try:
        art = artifact.load_artifact(path)
    except artifact.ArtifactError as e:
        raise ModelError(str(e)) from None
    target = resolve_target(cfg.device, cfg.backend, cfg.precision, fixed_backend=art.backend,
                            fixed_precision=art.precision, what=f"{path} ({art.variant})")
    preprocess = Preprocess.from_dict(art.preprocess)
    words = art.variant.split()
    while words and words[-1] in ("torch", "openvino", "fp32", "fp16", "bf16", "int8"):
        words.pop()  # the artifact's name without how it runs: that is said by the variant
    name = f"{' '.join(words) or art.arch} {target.precision}"
    extra = {"artifact": str(path), "calibration": art.calibration}
    try:
        if art.backend == "openvino":
            from ..backends.openvino_runtime import OpenVINORuntime, with_preprocessing

            runtime = OpenVINORuntime(with_preprocessing(art.openvino_model(), preprocess), preprocess, target.precision,
                                      cache_dir=str(_cache_dir(cfg) / "openvino"))
        else:
            from ..backends.torch_runtime import TorchRuntime, place

            module = art.torch_module()
            if art.precision != "int8":
                module = place(module, target.device, target.precision)
            runtime = TorchRuntime(module, preprocess, target.device, target.precision)
    except artifact.ArtifactError as e:
        raise ModelError(str(e)) from None
    return Classifier(art.arch, runtime, _labels(cfg, art.class_names), preprocess,
                      str(art.metadata.get("weights", "")), name, extra)


def build_models(cfg: ModelConfig, source=None, info=None) -> Models:
    device = resolve_device(cfg.device)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        log.warning(msg)
        warnings.append(msg)

    classifier = None
    if cfg.model_path or cfg.classifier != "none":
        try:
            classifier = build_classifier(cfg, calib=(source, info), warn=warn)
        except zoo.WeightsUnavailable as exc:
            warn(f"CLASSIFIER DISABLED: {exc}; running the face detector alone. "
                 f"Fix: --weights FILE (a torchvision {cfg.classifier} state_dict), or run once online to cache them.")
    faces = build_face_setup(
        cfg.faces, device, cfg.face_scale, cfg.face_stride, cfg.min_face,
        resolution_wh=info.resolution_wh if info is not None else None, backend=cfg.face_backend,
        small_face_every=cfg.small_face_every, background=cfg.face_background, live_pnet_threshold=cfg.live_pnet_threshold,
    )
    return Models(device, classifier, faces, warnings)
