"""A synthetic labelled set for ``runtime-eval``: FER2013 test faces pasted into real face-free scenes.

``runtime-eval --make-synthetic OUT --fer-test ../shared/fer2013/test --backgrounds
../shared/media/no_face.mp4 --seed 0 --images 300`` writes ``OUT/syn_00000.jpg``, ... and
``OUT/labels.csv`` (the format of :mod:`runtime.face_labels`, with each face's FER2013 file in the
``source`` column), so that ``runtime-eval OUT/labels.csv`` scores it.

Each image is a real face-free background (frames of the given videos, the given photos, and,
when scikit-image is installed, its face-free sample images: coffee, a cat, a rocket, bricks,
grass, gravel, the Hubble deep field, tissue, the moon, a motorcycle, a printed page, handwriting),
cropped and scaled to 560-900 px wide (420 px high at least), with 1 to 4 faces that do not overlap. A share of the
images (``face_free``) gets no face at all. Each face is a FER2013 **test** image (PublicTest;
the train split is refused), scaled to 48-220 px (log-uniform), rotated in-plane by up to
+-25 degrees, with its own gain, gamma and contrast, and pasted through a feathered rounded mask
(no hard square edge). Its label is the axis-aligned square of the scaled face, centred where the
face lies. The same seed gives the same set (on one install: with or without scikit-image the
backgrounds differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import DataError
from runtime.folders import VIDEO_SUFFIXES
from runtime.sources import IMAGE_SUFFIXES

FACE_SIDES = (48, 220)  # face side in pixels, drawn log-uniform
MAX_ANGLE = 25.0  # degrees, in-plane rotation either way
WIDTHS = (560, 900)  # output width in pixels (wider where the height needs it)
MIN_HEIGHT = 420  # the largest face, rotated, fits
MAX_FACES = 4
GAP = 4  # pixels kept between the faces' rotated squares
#: scikit-image's sample images with no human face (checked by eye; camera, astronaut and coins have faces).
SKIMAGE_SCENES = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "hubble_deep_field",
                  "immunohistochemistry", "moon", "stereo_motorcycle", "page", "text")
FRAMES_PER_VIDEO = 12  # frames taken from each background video, spread over it


def fer_test_faces(folder: Path) -> list[tuple[str, str]]:
    """The FER2013 test faces: ``(relative path, emotion)`` for every ``<class>/*`` image, sorted.

    Args:
        folder: The FER2013 ``test`` folder, or the FER2013 folder holding it.

    Raises:
        DataError: The folder is missing, has no faces, or is (or holds) the train split.
    """
    folder = Path(folder)
    if (folder / "test").is_dir():
        folder = folder / "test"
    if not folder.is_dir():
        raise DataError(f"FER2013 test folder {folder} does not exist: give ../shared/fer2013/test")
    if folder.resolve().name.lower() == "train":
        raise DataError(f"{folder} is FER2013's train split: the synthetic set uses test faces only; give its test "
                        "folder")
    faces = [(f"{d.name}/{f.name}", d.name) for d in sorted(folder.iterdir()) if d.is_dir()
             for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if any(Path(p).name.lower().startswith("training") for p, _ in faces):
        raise DataError(f"{folder} holds FER2013 training faces (Training_*): give the test folder (PublicTest)")
    if not faces:
        raise DataError(f"{folder} has no <class>/*.png or *.jpg faces: give the FER2013 test folder")
    return faces


def _bgr(img: np.ndarray) -> np.ndarray:
    """An RGB(A), gray or bool scikit-image array as BGR uint8."""
    from runtime.image import to_bgr, to_uint8

    img = to_uint8(np.asarray(img))
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
    return to_bgr(img)


def _video_backgrounds(path: Path) -> list[tuple[str, np.ndarray]]:
    """``FRAMES_PER_VIDEO`` frames spread over a video: one pass counts its frames, the next keeps
    only those (a long video is never held in memory whole)."""
    count = sum(1 for _ in _decoded(path))
    if not count:
        raise DataError(f"background video {path} gives no frames: give a face-free video or image")
    picks = set(np.linspace(0, count - 1, min(FRAMES_PER_VIDEO, count)).round().astype(int).tolist())
    return [(f"{path.name}#{i}", frame) for i, frame in enumerate(_decoded(path)) if i in picks]


def _decoded(path: Path):  # -> Iterator[np.ndarray]
    """Every frame of a video, in order."""
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def _skimage_backgrounds() -> list[tuple[str, np.ndarray]]:
    """scikit-image's face-free samples, or none when it is not installed."""
    try:
        import skimage.data
    except ImportError:
        return []
    out = []
    for name in SKIMAGE_SCENES:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a sample this version lacks, or one needing a download
            continue
        out.append((f"skimage:{name}", _bgr(img[0] if isinstance(img, tuple) else img)))
    return out


def load_backgrounds(paths: Sequence[Path], use_skimage: bool = True) -> list[tuple[str, np.ndarray]]:
    """Face-free scenes ``(name, BGR pixels)``: frames of videos, images, and scikit-image's samples.

    Raises:
        DataError: A path is missing or does not decode.
    """
    from runtime.errors import ImageError
    from runtime.image import read_image

    out = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"background {path} does not exist: give face-free videos or images")
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out += _video_backgrounds(path)
            continue
        try:
            out.append((path.name, _bgr(read_image(path))))
        except ImageError as exc:
            raise DataError(f"background {path} {exc}") from None
    if use_skimage:
        out += _skimage_backgrounds()
    return out


def _scene(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``background`` (half its size or more), flipped or not, scaled to 560-900 px wide
    (wider when needed for 420 px of height)."""
    h, w = background.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    cw, ch = max(16, round(w * scale)), max(16, round(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = background[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    width = int(rng.integers(WIDTHS[0], WIDTHS[1] + 1))
    width = max(width, math.ceil(MIN_HEIGHT * cw / ch))  # room for the largest rotated face, aspect kept
    height = max(MIN_HEIGHT, round(ch * width / cw))
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA
                      if cw > width else cv2.INTER_LINEAR)


def soft_mask(side: int) -> np.ndarray:
    """A float32 ``side x side`` mask: 1 inside a rounded square (a squircle), fading to 0 at the edge."""
    feather = max(2.0, 0.08 * side)
    half = side / 2 - feather
    r = (np.arange(side) + 0.5 - side / 2) / half
    inside = (np.abs(r)[None, :] ** 4 + np.abs(r)[:, None] ** 4) <= 1.0
    return cv2.GaussianBlur(inside.astype(np.float32), (0, 0), feather / 2)


def relight(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A gray face (uint8) under other light: contrast 0.6-1.3 about its mean, gamma 0.6-1.6, gain 0.6-1.4."""
    f = face.astype(np.float32) / 255.0
    f = (f - f.mean()) * rng.uniform(0.6, 1.3) + f.mean()
    f = np.clip(f, 0, 1) ** rng.uniform(0.6, 1.6) * rng.uniform(0.6, 1.4)
    return np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)


def face_patch(face: np.ndarray, side: int, angle: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The face scaled to ``side``, relit and rotated by ``angle`` degrees, on a square canvas.

    Returns:
        BGR pixels and their float32 alpha, both ``(n, n)`` with ``n = ceil(side * sqrt(2)) + 2``,
        the face centred.
    """
    interp = cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_CUBIC
    scaled = relight(cv2.resize(face, (side, side), interpolation=interp), rng)
    n = math.ceil(side * math.sqrt(2)) + 2
    pixels = np.zeros((n, n), np.uint8)
    alpha = np.zeros((n, n), np.float32)
    o = (n - side) // 2
    pixels[o:o + side, o:o + side] = scaled
    alpha[o:o + side, o:o + side] = soft_mask(side)
    turn = cv2.getRotationMatrix2D((o + side / 2, o + side / 2), angle, 1.0)
    pixels = cv2.warpAffine(pixels, turn, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha, turn, (n, n), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), alpha


def paste(scene: np.ndarray, pixels: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Blend ``pixels`` into ``scene`` at top-left ``(x, y)`` through ``alpha`` (in place)."""
    n = alpha.shape[0]
    region = scene[y:y + n, x:x + n].astype(np.float32)
    a = alpha[..., None]
    scene[y:y + n, x:x + n] = np.clip(region * (1 - a) + pixels.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)


def _place(scene_hw: tuple[int, int], extent: int, taken: list[tuple[int, int, int, int]],
           rng: np.random.Generator, tries: int = 50) -> tuple[int, int] | None:
    """A top-left corner for an ``extent``-sided square inside the scene, clear of ``taken``, or None."""
    h, w = scene_hw
    if extent > min(h, w):
        return None
    for _ in range(tries):
        x, y = int(rng.integers(0, w - extent + 1)), int(rng.integers(0, h - extent + 1))
        if all(x + extent + GAP <= a or a2 + GAP <= x or y + extent + GAP <= b or b2 + GAP <= y
               for a, b, a2, b2 in taken):
            return x, y
    return None


class _FacePool:
    """FER2013 test faces in a seeded random order, each used once before any repeats."""

    def __init__(self, faces: list[tuple[str, str]], rng: np.random.Generator) -> None:
        self.faces, self.rng, self.order = faces, rng, []

    def next(self) -> tuple[str, str]:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.faces)))
        return self.faces[int(self.order.pop())]


def compose(scene: np.ndarray, pool: _FacePool, fer: Path, count: int,
            rng: np.random.Generator) -> list[tuple[list[int], str, str]]:
    """Paste ``count`` faces (fewer where they do not fit) into ``scene`` in place.

    Returns:
        ``(box, emotion, source)`` per face pasted.
    """
    from runtime.image import read_image

    taken: list[tuple[int, int, int, int]] = []
    out = []
    for _ in range(count):
        side = int(round(math.exp(rng.uniform(math.log(FACE_SIDES[0]), math.log(FACE_SIDES[1])))))
        angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
        source, emotion = pool.next()
        pixels, alpha = face_patch(read_image(fer / source, cv2.IMREAD_GRAYSCALE), side, angle, rng)
        n = alpha.shape[0]
        spread = math.ceil(side * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))))
        corner = _place(scene.shape[:2], n, taken, rng)
        if corner is None:
            continue
        x, y = corner
        paste(scene, pixels, alpha, x, y)
        inset = (n - spread) // 2  # the rotated face's own square: what keeps faces apart
        taken.append((x + inset, y + inset, x + n - inset, y + n - inset))
        cx, cy = x + n / 2, y + n / 2
        out.append(([round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)],
                    emotion, f"test/{source}"))
    return out


def make_synthetic(out: Path, fer_test: Path, backgrounds: Sequence[Path], seed: int = 0, images: int = 300,
                   face_free: float = 0.2, use_skimage: bool = True) -> dict:
    """Write a synthetic set into the new (or empty) folder ``out``.

    Args:
        out: Folder for the images and ``labels.csv``; made if missing, refused if not empty.
        fer_test: The FER2013 test folder.
        backgrounds: Face-free videos or images.
        seed: The random seed (the same seed, the same set).
        images: How many images.
        face_free: Share of the images with no face.
        use_skimage: Add scikit-image's face-free samples to the backgrounds when it is installed.

    Returns:
        What was written: ``images``, ``faces``, ``face_free_images``, ``backgrounds``, ``labels``, ``seed``.

    Raises:
        DataError: Bad inputs, or ``out`` is a file or a folder with files in it.
    """
    from runtime.face_labels import write_labels
    from runtime.image import encode_image

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} is not a new or empty folder: give a new folder for the synthetic set")
    faces = fer_test_faces(fer_test)
    fer = Path(fer_test) / "test" if (Path(fer_test) / "test").is_dir() else Path(fer_test)
    scenes = load_backgrounds(backgrounds, use_skimage)
    rng = np.random.default_rng(seed)
    pool = _FacePool(faces, rng)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = []
    n_faces = n_free = 0
    for i in range(images):
        name = f"syn_{i:05d}.jpg"
        bg_name, background = scenes[int(rng.integers(len(scenes)))]
        scene = _scene(background, rng)
        pasted = [] if rng.random() < face_free else compose(scene, pool, fer, int(rng.integers(1, MAX_FACES + 1)),
                                                            rng)
        (out / name).write_bytes(encode_image(scene, ".jpg"))
        if not pasted:
            rows.append([name, "", "", "", "", "", bg_name])
            n_free += 1
        for box, emotion, source in pasted:
            rows.append([name, *box, emotion, source])
        n_faces += len(pasted)
    write_labels(out / "labels.csv", rows, note=True)
    return {"images": images, "faces": n_faces, "face_free_images": n_free, "backgrounds": len(scenes),
            "seed": seed, "labels": str(out / "labels.csv")}
