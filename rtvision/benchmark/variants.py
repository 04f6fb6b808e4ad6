"""Variants by name: what ``rtvision bench --variants a,b,c`` runs.

A variant is a factory ``(BenchContext) -> VariantPlan``: the pipeline settings (a
``ModelConfig`` and a batch size) and, optionally, a custom ``build`` that makes the ``Models``
(tests inject a deliberately slow model this way; experimental detectors can too). New work
plugs in by registering a name::

    register_variant("faces-fast", my_factory, "fast MTCNN + tracker")

``naive`` is special: it is not a pipeline but the textbook loop (``naive.py``).

A variant whose building blocks do not exist yet raises :class:`VariantUnavailable` with the
reason; the bench reports it before measuring anything.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ModelConfig, RunConfig
from ..errors import UsageError
from ..models.build import Models

log = logging.getLogger(__name__)

NAIVE = "naive"


class VariantUnavailable(UsageError):
    """A known variant that cannot run here yet (exit code 2)."""


@dataclass(frozen=True)
class BenchContext:
    """What every variant shares.

    weights: a state_dict file (random-init weights are saved to one) or ``imagenet``.
    model_path: an optimized ``.rtv`` artifact for the ``pruned-int8`` variant (``--model``).
    """

    source: str
    classifier: str = "resnet50"
    weights: str = "imagenet"
    device: str = "auto"
    model_path: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class VariantPlan:
    """How to run one variant. ``model`` is None only for the naive loop."""

    name: str
    model: ModelConfig | None
    batch: int | None = 1  # None: the pipeline's own default (4 for files, 1 live)
    description: str = ""
    build: Callable[[BenchContext], Models] | None = None
    check: Callable[[Models], None] | None = None  # raises VariantUnavailable after building
    overlap: bool = True  # files: face detections of the batches ahead on helper threads (RunConfig.overlap)
    lookahead: int = RunConfig.lookahead  # batches of detections that may run ahead (RunConfig.lookahead)

    @property
    def is_naive(self) -> bool:
        return self.model is None and self.build is None


VariantFactory = Callable[[BenchContext], VariantPlan]


@dataclass(frozen=True)
class VariantSpec:
    name: str
    factory: VariantFactory
    description: str


VARIANTS: dict[str, VariantSpec] = {}


def register_variant(name: str, factory: VariantFactory, description: str = "", replace: bool = False) -> None:
    """Add a variant by name (``replace=True`` to override an existing one)."""
    if name in VARIANTS and not replace:
        raise ValueError(f"variant {name!r} is already registered")
    VARIANTS[name] = VariantSpec(name, factory, description)


def unregister_variant(name: str) -> None:
    VARIANTS.pop(name, None)


def available_names() -> list[str]:
    return list(VARIANTS)


def plan_variant(name: str, ctx: BenchContext) -> VariantPlan:
    """The plan of variant ``name``; UsageError for an unknown name, VariantUnavailable if not yet runnable."""
    spec = VARIANTS.get(name)
    if spec is None:
        raise UsageError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    plan = spec.factory(ctx)
    if not plan.description:
        plan = dataclasses.replace(plan, description=spec.description)
    return plan


# -- the built-in variants ----------------------------------------------------------------------

def cli_defaults(ctx: BenchContext) -> tuple[ModelConfig, int | None]:
    """(ModelConfig, batch) exactly as plain ``rtvision --source …`` runs them: no tuning flags.

    The config dataclasses own the defaults (the command line reads them from there too); only
    source, classifier, weights, device and the cache are given. Batch None: the pipeline's own
    choice (4 for files, 1 for live sources).
    """
    cfg = ModelConfig(classifier=ctx.classifier, weights=ctx.weights, device=ctx.device, cache_dir=ctx.cache_dir)
    return cfg, RunConfig.batch


def _naive(ctx: BenchContext) -> VariantPlan:
    return VariantPlan(NAIVE, None, 1, f"textbook loop: cv2.VideoCapture, fp32 {ctx.classifier}, MTCNN full res, one frame at a time")


def _default(ctx: BenchContext) -> VariantPlan:
    cfg, batch = cli_defaults(ctx)
    return VariantPlan("default", cfg, batch, f"rtvision with no tuning flags (batch {batch}, precision {cfg.precision}, faces {cfg.faces})")


def _derived(name: str, description: str, check: Callable[[Models], None] | None = None, batch: int | None = None, **changes) -> VariantFactory:
    def factory(ctx: BenchContext) -> VariantPlan:
        cfg, default_batch = cli_defaults(ctx)
        return VariantPlan(name, dataclasses.replace(cfg, **changes), batch if batch is not None else default_batch, description, check=check)

    return factory


def _pruned_int8(ctx: BenchContext) -> VariantPlan:
    if not ctx.model_path:
        raise VariantUnavailable(
            "variant pruned-int8 needs an optimized artifact: pass --model FILE.rtv "
            "(made by `rtvision optimize --prune … --int8`)"
        )
    cfg, batch = cli_defaults(ctx)
    return VariantPlan("pruned-int8", dataclasses.replace(cfg, model_path=ctx.model_path), batch, f"artifact {ctx.model_path}")


register_variant(NAIVE, _naive, "the textbook loop (always measured)")
register_variant("default", _default, "rtvision with no tuning flags")
register_variant("fp32", _derived("fp32", "default settings, classifier forced to fp32", precision="fp32"))
register_variant("int8", _derived("int8", "default settings, int8 classifier (CPU)", precision="int8"))
register_variant("bf16", _derived("bf16", "default settings, bf16 classifier (OpenVINO on the CPU)", precision="bf16"))
register_variant("torch-int8", _derived(
    "torch-int8", "default settings, the classifier in torch.ao int8 (--backend torch; ResNets only)", backend="torch",
    precision="int8"))
register_variant("torch-fp32", _derived("torch-fp32", "default settings, the classifier in torch fp32 (--backend torch)",
                                        backend="torch", precision="fp32"))
register_variant("pruned-int8", _pruned_int8, "pruned + int8 artifact from `rtvision optimize` (--model)")
register_variant("faces-full", _derived("faces-full", "default settings, MTCNN full resolution every frame", faces="full"))
register_variant("faces-fast", _derived("faces-fast", "default settings, fast face mode", faces="fast"))
register_variant("faces-fast-facenet", _derived(
    "faces-fast-facenet", "fast face mode settings on facenet-pytorch's own MTCNN", faces="fast", face_backend="facenet"))
register_variant("faces-full-facenet", _derived(
    "faces-full-facenet", "facenet-pytorch's own MTCNN, full resolution, every frame", faces="full", face_backend="facenet"))
register_variant("faces-off", _derived("faces-off", "default settings, no face detector", faces="off"))
register_variant("batch1", _derived("batch1", "default settings, batch 1", batch=1))
register_variant("face-inline", _derived(
    "face-inline", "default settings, live face detections in line on the worker (--no-face-background)",
    face_background=False))
register_variant("small-faces-always", _derived(
    "small-faces-always", "default settings, the smallest faces looked for on every detection (--small-face-every 1)",
    small_face_every=1))


def _no_overlap(ctx: BenchContext) -> VariantPlan:
    cfg, batch = cli_defaults(ctx)
    return VariantPlan("no-overlap", cfg, batch, "default settings, classifier and faces one after the other (--no-overlap)", overlap=False)


register_variant("no-overlap", _no_overlap)


def _faces_full_no_overlap(ctx: BenchContext) -> VariantPlan:
    cfg, batch = cli_defaults(ctx)
    return VariantPlan("faces-full-no-overlap", dataclasses.replace(cfg, faces="full"), batch,
                       "MTCNN full resolution every frame, after the classifier (--faces full --no-overlap)", overlap=False)


register_variant("faces-full-no-overlap", _faces_full_no_overlap)
register_variant("live-pnet-0.8", _derived(
    "live-pnet-0.8", "default settings, live background detections at P-Net 0.8 (--live-pnet-threshold 0.8)",
    live_pnet_threshold=0.8))
register_variant("faces-stride2", _derived(
    "faces-stride2", "fast face mode with a detection every 2nd frame at most (--faces fast --face-stride 2)", faces="fast",
    face_stride=2))


def _lookahead1(ctx: BenchContext) -> VariantPlan:
    cfg, batch = cli_defaults(ctx)
    return VariantPlan("lookahead1", cfg, batch, "default settings, face detections only one batch ahead, on one helper thread (--lookahead 1)", lookahead=1)


register_variant("lookahead1", _lookahead1)


def build_variant_models(plan: VariantPlan, ctx: BenchContext) -> Models:
    """Build the models of a pipeline variant once (reused across modes and repeats).

    Missing building blocks (a module or function not written yet) become VariantUnavailable.
    """
    from ..models.build import build_models
    from ..sources import FileSource

    if plan.build is not None:
        models = plan.build(ctx)
    else:
        calib = FileSource(ctx.source)  # int8 calibrates on the source's frames
        info = calib.open()
        try:
            models = build_models(plan.model, calib, info)
        except (ImportError, NotImplementedError) as exc:
            raise VariantUnavailable(f"variant {plan.name} is not available yet: {exc.__class__.__name__}: {exc}") from None
        finally:
            calib.close()
    if plan.check is not None:
        plan.check(models)
    return models
