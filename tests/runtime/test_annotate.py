"""Annotators: emoji over faces, only there; edges; custom emoji folders; the sprite cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.annotate import (
    EmojiAnnotator,
    LabelAnnotator,
    beside,
    blend,
    default_emoji_dir,
    load_emoji,
    side_panel,
    snap_side,
)
from runtime.contract import FER2013_LABELS
from runtime.errors import EmocamError
from runtime.faces import Faces

#: One solid colour per label for a custom emoji folder (BGR).
COLOURS = {name: (20 * i + 10, 255 - 30 * i, 40 + 25 * i) for i, name in enumerate(FER2013_LABELS)}


def classified(boxes, labels) -> Faces:
    probs = np.full((len(labels), len(FER2013_LABELS)), 0.01, np.float32)
    for row, label in enumerate(labels):
        probs[row, FER2013_LABELS.index(label)] = 0.94
    return Faces(np.asarray(boxes).reshape(-1, 4), probs, FER2013_LABELS)


@pytest.fixture(scope="module")
def emoji() -> EmojiAnnotator:
    return EmojiAnnotator(labels=FER2013_LABELS)


@pytest.fixture
def solid_dir(tmp_path: Path) -> Path:
    """An emoji folder of opaque solid squares, one colour per label."""
    folder = tmp_path / "solid"
    folder.mkdir()
    for name, colour in COLOURS.items():
        img = np.zeros((32, 32, 4), np.uint8)
        img[..., :3], img[..., 3] = colour, 255
        cv2.imwrite(str(folder / f"{name}.png"), img)
    return folder


def grey(h: int = 240, w: int = 320) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def test_bundled_emoji_cover_every_label():
    images = load_emoji(None, FER2013_LABELS)
    assert set(images) == set(FER2013_LABELS)
    for img in images.values():
        assert img.ndim == 3 and img.shape[2] == 4 and img.dtype == np.uint8
        assert img[..., 3].max() == 255 and img[..., 3].min() == 0  # real alpha: opaque face, clear corners
    assert (default_emoji_dir() / "NOTICE").is_file()


def test_pixels_change_inside_the_face_and_nowhere_far_from_it(emoji: EmojiAnnotator):
    frame = grey()
    before = frame.copy()
    box = (100, 60, 180, 140)
    out = emoji.annotate(frame, classified([box], ["happy"]))
    assert out is frame  # in place
    x1, y1, x2, y2 = box
    inside = np.abs(frame[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).sum(axis=2)
    assert (inside[30:50, 30:50] > 30).all()  # the emoji's opaque middle covers the face's middle
    far = np.ones(frame.shape[:2], bool)
    far[y1 - 2: y2 + 2, x1 - 2: x2 + 2] = False
    np.testing.assert_array_equal(frame[far], before[far])


def test_each_face_gets_its_own_labels_emoji(solid_dir: Path):
    annotator = EmojiAnnotator(solid_dir, FER2013_LABELS)
    frame = grey(300, 500)
    boxes = [(20, 20, 120, 120), (200, 20, 300, 120), (350, 150, 450, 250)]
    labels = ["happy", "sad", "angry"]
    annotator.annotate(frame, classified(boxes, labels))
    for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
        centre = frame[(y1 + y2) // 2, (x1 + x2) // 2]
        assert tuple(int(v) for v in centre) == COLOURS[label], label


def test_beside_placement_leaves_the_face_visible(solid_dir: Path):
    annotator = EmojiAnnotator(solid_dir, FER2013_LABELS, placement="beside")
    frame = grey(200, 400)
    before = frame.copy()
    annotator.annotate(frame, classified([(50, 50, 130, 130)], ["sad"]))
    np.testing.assert_array_equal(frame[50:130, 50:130], before[50:130, 50:130])
    assert tuple(int(v) for v in frame[90, 170]) == COLOURS["sad"]  # to the right of the face
    # At the right edge the emoji goes to the left of the face instead.
    frame = grey(200, 400)
    annotator.annotate(frame, classified([(300, 50, 380, 130)], ["sad"]))
    assert tuple(int(v) for v in frame[90, 260]) == COLOURS["sad"]
    assert tuple(int(v) for v in frame[90, 340]) == (128, 128, 128)


def test_beside_is_never_cut_by_the_frame_edge(solid_dir: Path):
    """Issue 16: on the README's demo the emoji beside a large face ran off the frame. With room on
    neither side it shrinks into the roomier one; near the top it stays inside the frame."""
    annotator = EmojiAnnotator(solid_dir, FER2013_LABELS, placement="beside")
    frame = grey(300, 400)
    face = (120, 0, 300, 180)  # a 180-px emoji: 100 px free on the right, 120 on the left
    annotator.annotate(frame, classified([face], ["happy"]))
    painted = (frame != 128).any(axis=2)
    assert not painted[0:180, 120:300].any()  # the face stays visible
    cols = np.where(painted.any(axis=0))[0]
    rows = np.where(painted.any(axis=1))[0]
    assert cols.max() < 120 and 100 <= cols.max() + 1 - cols.min() <= 120  # shrunk into the left gap, not to nothing
    assert rows.min() == 90 - (cols.max() + 1 - cols.min()) // 2  # centred on the face
    x, y, side = beside(120, 300, 20, 180, 400, 300)  # a face near the top: kept inside the frame
    assert x >= 0 and x + side <= 120 and y == 0 and side <= 120
    assert beside(150, 280, 65, 129, 400, 300) == (21, 1, 129)  # fits on the left: full size
    assert beside(0, 400, 65, 130, 400, 300)[2] == 0  # no room at all: nothing drawn


def test_boxes_partly_outside_the_frame(solid_dir: Path):
    annotator = EmojiAnnotator(solid_dir, FER2013_LABELS)
    frame = grey(100, 150)
    boxes = [(-40, -30, 40, 50), (120, 70, 200, 150)]
    out = annotator.annotate(frame, classified(boxes, ["fear", "neutral"]))
    assert out.shape == (100, 150, 3)
    assert tuple(int(v) for v in frame[0, 0]) == COLOURS["fear"]
    assert tuple(int(v) for v in frame[99, 149]) == COLOURS["neutral"]


def test_boxes_wholly_outside_and_unclassified_faces_change_nothing(emoji: EmojiAnnotator):
    frame = grey()
    before = frame.copy()
    emoji.annotate(frame, classified([(-300, -300, -200, -200), (400, 10, 480, 90)], ["happy", "sad"]))
    emoji.annotate(frame, Faces([[100, 60, 180, 140]]))  # not classified yet
    emoji.annotate(frame, Faces.empty())
    np.testing.assert_array_equal(frame, before)


def test_emoji_dir_missing_a_png(tmp_path: Path):
    folder = tmp_path / "avatars"
    shutil.copytree(default_emoji_dir(), folder)
    (folder / "disgust.png").unlink()
    with pytest.raises(EmocamError, match="disgust.png"):
        EmojiAnnotator(folder, FER2013_LABELS)


def test_emoji_dir_missing_or_broken(tmp_path: Path):
    with pytest.raises(EmocamError, match="does not exist"):
        EmojiAnnotator(tmp_path / "nowhere", FER2013_LABELS)
    folder = tmp_path / "broken"
    shutil.copytree(default_emoji_dir(), folder)
    (folder / "fear.png").write_bytes(b"not a png")
    with pytest.raises(EmocamError, match="fear.png"):
        EmojiAnnotator(folder, FER2013_LABELS)


def test_emoji_dir_follows_the_models_labels(tmp_path: Path):
    folder = tmp_path / "three"
    folder.mkdir()
    for name in ("calm", "joy", "rage"):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((8, 8, 3), 200, np.uint8))  # no alpha: opaque
    annotator = EmojiAnnotator(folder, ("calm", "joy", "rage"))
    assert set(annotator.images) == {"calm", "joy", "rage"}
    assert annotator.images["joy"].shape == (8, 8, 4)
    with pytest.raises(EmocamError, match="angry.png"):
        EmojiAnnotator(folder)  # default labels: FER2013's


def test_sprite_cache_reuses_and_evicts():
    annotator = EmojiAnnotator(labels=FER2013_LABELS, cache_size=2, prerender=False)
    first = annotator.sprite("happy", 64)
    assert annotator.sprite("happy", 64) is first  # reused
    sad = annotator.sprite("sad", 64)
    assert sad is not first
    assert annotator.sprite("happy", 64) is first  # used last: ("sad", 64) is now the least recently used
    annotator.sprite("happy", 65)  # a third entry evicts ("sad", 64)
    assert annotator.sprite("happy", 64) is first
    assert annotator.sprite("sad", 64) is not sad
    color, inv_alpha = first
    assert color.shape == inv_alpha.shape == (64, 64, 3)
    assert color.dtype == inv_alpha.dtype == np.uint8
    assert (color.astype(int) + inv_alpha <= 256).all()  # premultiplied: colour <= alpha
    assert inv_alpha.min() == 0 and inv_alpha.max() == 255  # opaque inside, transparent corners


def test_sprite_cache_is_bounded_in_bytes():
    annotator = EmojiAnnotator(labels=FER2013_LABELS, cache_bytes=2 * 400 * 400 * 6, prerender=False)
    big = annotator.sprite("happy", 400)
    assert annotator.sprite("happy", 400) is big
    for side in (401, 402):
        annotator.sprite("happy", side)
    assert annotator.sprite("happy", 400) is not big  # pushed out by bytes, not by count (256)


def test_annotating_the_same_face_reuses_the_sprite(monkeypatch: pytest.MonkeyPatch):
    emoji = EmojiAnnotator(labels=FER2013_LABELS, prerender=False)
    calls = []
    real_resize = cv2.resize

    def counting_resize(*args, **kwargs):
        calls.append(1)
        return real_resize(*args, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting_resize)
    faces = classified([(100, 60, 200, 160)], ["surprise"])
    for _ in range(5):
        emoji.annotate(grey(), faces)
    assert len(calls) == 1
    for grow in range(1, 4):  # a box a pixel or three larger snaps to the same sprite side
        emoji.annotate(grey(), classified([(100, 60, 200 + grow, 160 + grow)], ["surprise"]))
    assert len(calls) == 1


def test_prerendered_sprites_need_no_resize(emoji: EmojiAnnotator, monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(cv2, "resize", lambda *a, **k: calls.append(1))
    for side in (40, 77, 120, 200):
        for label in FER2013_LABELS:
            emoji.annotate(grey(), classified([(10, 10, 10 + side, 10 + side)], [label]))
    assert calls == []


def test_snap_side_never_grows_and_stays_close():
    sides = np.arange(1, 2000)
    snapped = np.array([snap_side(int(s)) for s in sides])
    assert (snapped <= sides).all() and (snapped >= 1).all()
    assert (snapped[:32] == sides[:32]).all()  # small sprites are exact
    assert (snapped / sides).min() > 1 / 1.07  # at most ~6 % smaller
    assert len(set(snapped[200:400])) < 15  # a face growing from 200 to 400 px uses a dozen sprites, not 200


def test_blend_clips_and_composites():
    frame = np.zeros((10, 10, 3), np.uint8)
    color = np.full((4, 4, 3), 200, np.uint8)
    opaque = np.zeros((4, 4, 3), np.uint8)  # 255 - alpha = 0
    blend(frame, (color, opaque), -2, -2)
    assert (frame[:2, :2] == 200).all() and frame[2:].sum() == 0 and frame[:, 2:].sum() == 0
    blend(frame, (color, opaque), 8, 9)
    assert (frame[9, 8:] == 200).all() and frame[8, 8:].sum() == 0
    before = frame.copy()
    blend(frame, (color, opaque), 10, 0)  # wholly outside
    blend(frame, (color, opaque), -4, 3)
    blend(frame, (np.zeros_like(color), np.full_like(opaque, 255)), 3, 3)  # transparent
    np.testing.assert_array_equal(frame, before)
    half = (np.full((4, 4, 3), 50, np.uint8), np.full((4, 4, 3), 128, np.uint8))  # premultiplied 100 at ~50%
    frame[:] = 100
    blend(frame, half, 0, 0)
    assert (np.abs(frame[:4, :4].astype(int) - 100) <= 1).all()


def test_label_annotator_writes_near_the_face():
    frame = grey()
    before = frame.copy()
    LabelAnnotator().annotate(frame, classified([(100, 80, 200, 180)], ["happy"]))
    changed = np.abs(frame.astype(int) - before).sum(axis=2) > 0
    assert changed[50:80, 100:200].any()  # the label above the box
    assert not changed[:, 260:].any() and not changed[200:].any()


def test_side_panel_is_wider_and_shows_the_emoji(solid_dir: Path):
    annotator = EmojiAnnotator(solid_dir, FER2013_LABELS)
    frame = grey(200, 300)
    faces = classified([(10, 10, 40, 40), (100, 50, 200, 150)], ["angry", "happy"])
    out = side_panel(frame, faces, annotator)
    assert out.shape == (200, 400, 3)
    np.testing.assert_array_equal(out[:, :300], frame)
    panel = out[:, 300:].reshape(-1, 3)
    assert (panel == COLOURS["happy"]).all(axis=1).sum() > 1000  # the larger face's emotion, large
    assert not (panel == COLOURS["angry"]).all(axis=1).any()
