"""Annotators: ``annotate(frame, faces) -> frame``, drawing in place on a BGR frame.

:class:`EmojiAnnotator` alpha-blends an emoji PNG over (or beside) each face,
:class:`LabelAnnotator` writes the label and confidence, :func:`side_panel` shows the
dominant emotion large beside the frame, as the original project's GUI did.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import EmocamError
from runtime.faces import Faces
from runtime.image import ImageError, read_image


def default_emoji_dir() -> Path:
    """The bundled Noto emoji PNGs (Apache-2.0, see their NOTICE)."""
    return Path(str(resources.files("runtime") / "assets" / "emoji"))


def load_emoji(emoji_dir: str | Path | None, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Read ``<label>.png`` for every label as BGRA uint8.

    Raises:
        EmocamError: The folder is missing, a label has no PNG, or a PNG does not decode.
    """
    folder = Path(emoji_dir) if emoji_dir is not None else default_emoji_dir()
    if folder.is_file():
        raise EmocamError(f"emoji folder {folder} is a file: give a folder with {', '.join(labels)} .png files")
    if not folder.is_dir():
        raise EmocamError(f"emoji folder {folder} does not exist: give a folder with {', '.join(labels)} .png files")
    missing = [name for name in labels if not (folder / f"{name}.png").is_file()]
    if missing:
        pngs = ", ".join(f"{m}.png" for m in missing)
        raise EmocamError(f"emoji folder {folder} lacks {pngs}: add one PNG per label")
    out = {}
    for name in labels:
        try:
            img = read_image(folder / f"{name}.png", cv2.IMREAD_UNCHANGED)  # with alpha; 16-bit becomes 8-bit
        except ImageError as exc:
            raise EmocamError(f"{folder / f'{name}.png'} {exc}: replace it with a PNG") from None
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        out[name] = img
    return out


Sprite = tuple[np.ndarray, np.ndarray]  # (premultiplied BGR uint8 (h, w, 3), 255 - alpha uint8 (h, w, 3))
#: Sprite sides above this snap down to a ladder of sizes ``SIZE_STEP`` apart, so a face whose box
#: changes by a pixel reuses a rendered sprite instead of resizing the emoji again (2 ms each).
EXACT_SIDE = 32
SIZE_STEP = 1.06  # ladder ratio: an emoji is at most 6 % smaller than its box
PRERENDER_SIDE = 200  # sprites up to this side are rendered for every label at start (about 10 MB)


def _ladder(top: int = 1 << 15) -> list[int]:
    """Sprite sides from :data:`EXACT_SIDE` up, each at most ``SIZE_STEP`` times the one below plus a pixel."""
    sides = [EXACT_SIDE]
    while sides[-1] < top:
        sides.append(int(sides[-1] * SIZE_STEP) + 1)
    return sides


_LADDER = _ladder()


def snap_side(side: int) -> int:
    """The sprite side used for a box side: exact up to :data:`EXACT_SIDE`, else the ladder step at or below it."""
    if side <= EXACT_SIDE or side >= _LADDER[-1]:
        return max(1, side)
    return _LADDER[bisect.bisect_right(_LADDER, side) - 1]


def render_sprite(image: np.ndarray, side: int) -> Sprite:
    """A BGRA emoji resized to ``side`` pixels and premultiplied for :func:`blend`."""
    interp = cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_LINEAR
    img = cv2.resize(image, (side, side), interpolation=interp)
    alpha = cv2.merge([img[..., 3]] * 3)
    color = cv2.multiply(cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), alpha, scale=1 / 255)
    return color, cv2.bitwise_not(alpha)


def blend(frame: np.ndarray, sprite: Sprite, x: int, y: int) -> None:
    """Alpha-blend a premultiplied sprite onto ``frame`` at ``(x, y)``, clipped at the edges, in uint8.

    ``frame = colour + frame * (255 - alpha) / 255``, rounded, with OpenCV's saturating SIMD
    arithmetic (within 1.5 grey levels of the exact float blend).

    Args:
        frame: BGR uint8 frame, changed in place.
        sprite: ``(premultiplied BGR uint8 (h, w, 3), 255 - alpha uint8 (h, w, 3))``.
        x: Left edge in frame pixels (may be negative).
        y: Top edge in frame pixels (may be negative).
    """
    color, inv_alpha = sprite
    sh, sw = color.shape[:2]
    fh, fw = frame.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + sw, fw), min(y + sh, fh)
    if x2 <= x1 or y2 <= y1:
        return
    roi = frame[y1:y2, x1:x2]
    c = color[y1 - y : y2 - y, x1 - x : x2 - x]
    a = inv_alpha[y1 - y : y2 - y, x1 - x : x2 - x]
    roi[...] = cv2.add(cv2.multiply(roi, a, scale=1 / 255), c)


class EmojiAnnotator:
    """Composites the emoji of each face's label, scaled to its box.

    Sprites (resized, premultiplied emoji) up to :data:`PRERENDER_SIDE` are rendered for every
    label at start, on a ladder of sides (:func:`snap_side`): a new or moving box never waits
    for a resize. Larger ones are rendered when first needed and kept in a bounded cache.

    Args:
        emoji_dir: Folder with one ``<label>.png`` per class (default: the bundled Noto set).
        labels: The class names to expect (the model's).
        placement: ``over`` covers the face; ``beside`` puts the emoji to its right (left at
            the frame's right edge).
        scale: Emoji side as a multiple of the box's larger side.
        cache_size: Sprites kept beyond the pre-rendered ones, keyed by label and size.
        cache_bytes: Most memory those may take (the newest one is always kept): a 600-pixel
            sprite is 2.2 MB, so ``cache_size`` alone could hold hundreds of megabytes.
        prerender: Render the sprites up to :data:`PRERENDER_SIDE` at start.
    """

    def __init__(
        self,
        emoji_dir: str | Path | None = None,
        labels: Sequence[str] = (),
        placement: str = "over",
        scale: float = 1.0,
        cache_size: int = 256,
        cache_bytes: int = 64 << 20,
        prerender: bool = True,
    ) -> None:
        if placement not in ("over", "beside"):
            raise ValueError(f"placement must be 'over' or 'beside', got {placement!r}")
        if scale <= 0:
            raise ValueError(f"emoji scale must be > 0, got {scale}")
        from runtime.contract import FER2013_LABELS

        self.images = load_emoji(emoji_dir, labels or FER2013_LABELS)
        self.placement = placement
        self.scale = scale
        self._cache: OrderedDict[tuple[str, int], Sprite] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._prerendered: dict[tuple[str, int], Sprite] = {}
        if prerender:
            sides = sorted({snap_side(s) for s in range(EXACT_SIDE, PRERENDER_SIDE + 1)})
            self._prerendered = {(label, side): render_sprite(img, side)
                                 for label, img in self.images.items() for side in sides}

    def sprite(self, label: str, side: int) -> Sprite:
        """The emoji for ``label`` at exactly ``side`` pixels, premultiplied: pre-rendered or cached."""
        key = (label, side)
        hit = self._prerendered.get(key) or self._cache.get(key)
        if hit is not None:
            if key in self._cache:
                self._cache.move_to_end(key)
            return hit
        sprite = render_sprite(self.images[label], side)
        self._cache[key] = sprite
        self._cached_bytes += sprite[0].nbytes + sprite[1].nbytes
        while len(self._cache) > 1 and (len(self._cache) > self._cache_size or self._cached_bytes > self._cache_bytes):
            _, (color, inv_alpha) = self._cache.popitem(last=False)
            self._cached_bytes -= color.nbytes + inv_alpha.nbytes
        return sprite

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """Draw the emoji of every classified face on ``frame`` (BGR, in place) and return it."""
        if not len(faces) or faces.probs is None:
            return frame
        fh, fw = frame.shape[:2]
        for (x1, y1, x2, y2), label in zip(faces.xyxy, faces.labels, strict=True):
            side = snap_side(round(max(x2 - x1, y2 - y1) * self.scale))
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            x, y = cx - side // 2, cy - side // 2  # over the face
            if self.placement == "beside":
                x, y, side = beside(int(x1), int(x2), int(cy), side, int(fw), int(fh))
                if side < 1:
                    continue
            blend(frame, self.sprite(label, side), x, y)
        return frame


def beside(x1: int, x2: int, cy: int, side: int, fw: int, fh: int) -> tuple[int, int, int]:
    """Where a ``side``-pixel emoji goes beside a face spanning ``x1..x2``: ``(x, y, side)``.

    To the right of the face when it fits, else to its left; where neither side has room, the
    emoji shrinks (to a sprite side of the ladder) into the roomier one, so it is never cut off
    by the frame's edge and never covers the face. Vertically centred on the face, kept inside
    the frame. A side of 0 means there is no room at all.
    """
    right, left = fw - x2, x1
    if right < side and left < side:
        room = max(right, left)
        side = room if room <= EXACT_SIDE else _LADDER[bisect.bisect_right(_LADDER, room) - 1]
    x = x2 if right >= side else x1 - side
    y = min(max(cy - side // 2, 0), max(fh - side, 0))
    return x, y, side


class LabelAnnotator:
    """Writes ``label NN%`` above each classified face (and a thin box around it)."""

    def __init__(self, box: bool = True) -> None:
        self.box = box

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """Draw labels on ``frame`` (BGR, in place) and return it."""
        if not len(faces) or faces.probs is None:
            return frame
        for (x1, y1, x2, y2), label, conf in zip(faces.xyxy, faces.labels, faces.confidence, strict=True):
            scale = max(0.4, min(1.2, (x2 - x1) / 200))
            text = f"{label} {conf:.0%}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = y1 - 6 if y1 - th - 6 > 0 else y2 + th + 6
            if self.box:
                cv2.rectangle(frame, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), (255, 200, 0), 1)
            cv2.rectangle(frame, (int(x1), ty - th - 3), (int(x1) + tw + 4, ty + base - 1), (0, 0, 0), -1)
            cv2.putText(frame, text, (int(x1) + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
        return frame


def side_panel(frame: np.ndarray, faces: Faces, emoji: EmojiAnnotator) -> np.ndarray:
    """The frame with a panel on its right showing the largest face's emotion large.

    Returns:
        A new frame, wider than the input by ``height // 2`` pixels.
    """
    h = frame.shape[0]
    pw = max(1, h // 2)
    panel = np.full((h, pw, 3), 32, np.uint8)
    if len(faces) and faces.probs is not None:
        wh = faces.size_wh
        i = int(np.argmax(wh[:, 0] * wh[:, 1]))
        label = faces.labels[i]
        side = max(1, int(pw * 0.8))
        blend(panel, emoji.sprite(label, side), (pw - side) // 2, max(0, h // 2 - side // 2 - 10))
        text = f"{label} {faces.confidence[i]:.0%}"
        scale = max(0.4, pw / 300)
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(panel, text, (max(2, (pw - tw) // 2), min(h - 8, h // 2 + side // 2 + 20)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([frame, panel], axis=1)
