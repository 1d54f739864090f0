"""Property tests on the crop / resize / composite path: any frame size, any channel count, boxes
partly or wholly outside the frame. Nothing raises and every shape holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings  # the [dev] extra
from hypothesis import strategies as st

from runtime.annotate import EmojiAnnotator, blend
from runtime.contract import FER2013_LABELS
from runtime.faces import Faces
from runtime.image import to_bgr, to_gray
from runtime.pipeline import Pipeline

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHANNELS = (None, 1, 3, 4)  # None: a 2-D grayscale frame


@st.composite
def frames(draw, max_w: int = 4096, max_h: int = 2160) -> np.ndarray:
    w = draw(st.integers(1, max_w))
    h = draw(st.integers(1, max_h))
    channels = draw(st.sampled_from(CHANNELS))
    shape = (h, w) if channels is None else (h, w, channels)
    frame = np.full(shape, draw(st.integers(0, 255)), np.uint8)
    frame[: h // 2, : w // 3] = draw(st.integers(0, 255))  # some structure
    return frame


@st.composite
def frames_and_faces(draw, max_faces: int = 4, max_w: int = 4096, max_h: int = 2160) -> tuple[np.ndarray, Faces]:
    """A frame and classified faces at most the frame's size, anywhere from wholly left/above the
    frame to wholly right/below it."""
    frame = draw(frames(max_w, max_h))
    h, w = frame.shape[:2]
    boxes = []
    for _ in range(draw(st.integers(0, max_faces))):
        bw, bh = draw(st.integers(0, w)), draw(st.integers(0, h))
        x1, y1 = draw(st.integers(-bw - 5, w + 5)), draw(st.integers(-bh - 5, h + 5))
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    k = len(FER2013_LABELS)
    probs = np.asarray(draw(st.lists(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k),
                                     min_size=len(boxes), max_size=len(boxes))), np.float32).reshape(len(boxes), k)
    probs /= probs.sum(axis=1, keepdims=True) if len(boxes) else 1
    return frame, Faces(np.asarray(boxes, np.int64).reshape(-1, 4), probs, FER2013_LABELS)


def _case(h: int, w: int, channels: int | None, boxes: list[list[int]]) -> tuple[np.ndarray, Faces]:
    frame = np.full((h, w) if channels is None else (h, w, channels), 90, np.uint8)
    frame[: h // 2] = 200
    probs = np.eye(len(FER2013_LABELS), dtype=np.float32)[np.arange(len(boxes)) % len(FER2013_LABELS)]
    return frame, Faces(np.asarray(boxes).reshape(-1, 4), probs * 0.9 + 0.1 / len(FER2013_LABELS), FER2013_LABELS)


#: The extremes, always tried: a 4K BGRA frame with big faces partly and wholly outside, and a 1x1 gray one.
BIG = _case(2160, 4096, 4, [[-500, -300, 1500, 1700], [3000, 1500, 5000, 3500], [-3000, 0, -1000, 2000]])
TINY = _case(1, 1, None, [[0, 0, 1, 1], [-5, -5, 0, 0], [1, 1, 3, 3], [0, 0, 0, 0]])


def _sprite_rects(faces: Faces, scale: float = 1.0) -> list[tuple[int, int, int, int]]:
    """Where the ``over`` placement may draw: a square of the box's larger side, centred on the box."""
    rects = []
    for x1, y1, x2, y2 in faces.xyxy.tolist():
        side = max(1, round(max(x2 - x1, y2 - y1) * scale))
        x, y = (x1 + x2) // 2 - side // 2, (y1 + y2) // 2 - side // 2
        rects.append((x, y, x + side, y + side))
    return rects


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline(provider="cpu", show_labels=True)


@pytest.fixture(scope="module")
def pipe_panel() -> Pipeline:
    return Pipeline(provider="cpu", panel=True)


@SETTINGS
@given(data=frames_and_faces(max_faces=6))
@example(data=BIG)
@example(data=TINY)
def test_crop_any_frame_any_box(classifier, data):
    frame, faces = data
    gray = to_gray(frame)
    assert gray.shape == frame.shape[:2]
    batch = classifier.crop(gray, faces.xyxy)
    assert batch.shape == (len(faces), 48, 48, 1) and batch.dtype == np.float32
    assert np.isfinite(batch).all() and (batch >= 0).all() and (batch <= 255).all()
    h, w = gray.shape
    m = classifier.margin
    for i, (x1, y1, x2, y2) in enumerate(faces.xyxy.tolist()):
        pw, ph = (x2 - x1) * m, (y2 - y1) * m  # the documented margin, then clipped to the frame
        gx1, gy1 = max(0, round(x1 - pw)), max(0, round(y1 - ph))
        gx2, gy2 = min(w, round(x2 + pw)), min(h, round(y2 + ph))
        if gx2 <= gx1 or gy2 <= gy1:
            assert (batch[i] == 0).all()  # nothing of the frame to see
        else:  # pixels of the frame, resized: within the frame's range
            assert gray[gy1:gy2, gx1:gx2].min() <= batch[i].min() <= batch[i].max() <= gray[gy1:gy2, gx1:gx2].max()


@SETTINGS
@given(data=frames_and_faces(max_faces=3))
@example(data=BIG)
@example(data=TINY)
def test_classify_any_frame_any_box(classifier, data):
    frame, faces = data
    out = classifier.classify(frame, Faces(faces.xyxy))
    assert out.probs.shape == (len(faces), 7)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out.xyxy, faces.xyxy)


@SETTINGS
@given(data=frames_and_faces())
@example(data=BIG)
@example(data=TINY)
def test_emoji_annotate_any_frame_any_box(data):
    frame, faces = data
    annotator = EmojiAnnotator(labels=FER2013_LABELS, cache_bytes=32 << 20)
    bgr = to_bgr(frame).copy()
    before = bgr.copy()
    out = annotator.annotate(bgr, faces)
    assert out is bgr and out.shape == before.shape and out.dtype == np.uint8
    allowed = np.zeros(bgr.shape[:2], bool)
    for x1, y1, x2, y2 in _sprite_rects(faces):
        allowed[max(0, y1): max(0, y2), max(0, x1): max(0, x2)] = True
    np.testing.assert_array_equal(out[~allowed], before[~allowed])  # nothing drawn away from the faces


@SETTINGS
@given(
    frame=frames(max_w=1500, max_h=1000),
    side=st.integers(1, 600),
    x=st.integers(-700, 1600),
    y=st.integers(-700, 1100),
    alpha=st.floats(0.0, 1.0),
)
def test_blend_any_position(frame, side, x, y, alpha):
    bgr = to_bgr(frame).copy()
    before = bgr.copy()
    a = round(alpha * 255)
    colour = np.full((side, side, 3), round(200 * a / 255), np.uint8)  # premultiplied 200 at ``alpha``
    inv_alpha = np.full((side, side, 3), 255 - a, np.uint8)
    blend(bgr, (colour, inv_alpha), x, y)
    h, w = bgr.shape[:2]
    inside = np.zeros((h, w), bool)
    inside[max(0, y): max(0, y + side), max(0, x): max(0, x + side)] = True
    np.testing.assert_array_equal(bgr[~inside], before[~inside])
    if inside.any():
        expected = 200 * alpha + before[inside].astype(np.float64) * (1 - alpha)
        assert np.abs(bgr[inside] - expected).max() <= 1.5  # uint8 blending: within 1.5 grey levels


@SETTINGS
@given(data=frames_and_faces())
@example(data=BIG)
@example(data=TINY)
def test_pipeline_annotate_any_frame(pipe, data):
    frame, faces = data
    original = frame.copy()
    out = pipe.annotate(frame, faces)
    h, w = frame.shape[:2]
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    if frame.ndim == 3 and frame.shape[2] == 3:
        assert out is frame  # BGR: in place
    else:
        np.testing.assert_array_equal(frame, original)  # other formats: a BGR copy, the input untouched


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=frames_and_faces(max_faces=2))
@example(data=BIG)
@example(data=TINY)
def test_pipeline_panel_any_frame(pipe_panel, data):
    frame, faces = data
    out = pipe_panel.annotate(frame, faces)
    h, w = frame.shape[:2]
    assert out.shape == (h, w + max(1, h // 2), 3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames())
@example(frame=BIG[0])
@example(frame=TINY[0])
def test_pipeline_call_any_frame(pipe, frame):
    out, faces = pipe(frame)
    h, w = frame.shape[:2]
    assert out.shape == (h, w, 3)
    assert faces.probs is not None and faces.probs.shape == (len(faces), 7)
    assert faces.track_id is not None and len(faces.track_id) == len(faces)
    if len(faces):
        assert (faces.xyxy[:, :2] >= 0).all() and (faces.xyxy[:, 2] <= w).all() and (faces.xyxy[:, 3] <= h).all()
