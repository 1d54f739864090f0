"""Faces: the detector -> classifier -> tracker -> annotator data type."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.faces import Faces, clip_xyxy, square_at_edges

NAMES = ("angry", "happy", "sad")


def test_boxes_are_int32_n_by_4():
    faces = Faces([[1.0, 2.0, 30.0, 40.0], [5, 6, 7, 8]])
    assert faces.xyxy.dtype == np.int32
    assert faces.xyxy.shape == (2, 4)
    assert len(faces) == 2
    assert faces.size_wh.tolist() == [[29, 38], [2, 2]]
    assert Faces([0, 0, 10, 10]).xyxy.shape == (1, 4)  # one box given flat


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"xyxy": np.zeros((2, 3))}, r"\(n, 4\)"),  # 3 coordinates per box
        ({"xyxy": np.zeros(5)}, r"\(n, 4\)"),
        ({"xyxy": np.zeros(8)}, r"got shape \(8,\)"),  # two boxes given flat: ambiguous, refused
        ({"xyxy": np.zeros((1, 2, 4))}, r"\(n, 4\)"),
        ({"xyxy": [[10, 0, 5, 10]]}, "x2 >= x1"),  # x2 < x1
        ({"xyxy": [[0, 10, 10, 5]]}, "y2 >= y1"),  # y2 < y1
        ({"xyxy": [[0, 0, 1, 1]], "probs": np.ones((2, 3)), "class_names": NAMES}, "probs must be"),  # 2 rows, 1 face
        ({"xyxy": [[0, 0, 1, 1]], "probs": np.ones(3), "class_names": NAMES}, "probs must be"),  # 1-D
        ({"xyxy": [[0, 0, 1, 1]], "probs": np.ones((1, 4)), "class_names": NAMES}, "columns"),  # 4 columns, 3 names
        ({"xyxy": [[0, 0, 1, 1]], "track_id": [1, 2]}, "track_id"),
    ],
    ids=["3-coords", "flat-5", "flat-8", "3-d", "x2<x1", "y2<y1", "probs-rows", "probs-1d", "probs-cols", "track-len"],
)
def test_bad_shapes_are_rejected(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Faces(**kwargs)


def test_empty():
    faces = Faces.empty()
    assert len(faces) == 0 and faces.xyxy.shape == (0, 4)
    assert faces.to_records() == []
    classified = faces.with_probs(np.zeros((0, 3), np.float32), NAMES)
    assert classified.labels == []
    assert classified.confidence.shape == (0,)
    assert classified.class_id.shape == (0,)


def test_labels_and_confidence_follow_the_most_probable_class():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], np.float32)
    faces = Faces(np.zeros((3, 4)), probs, NAMES)
    assert faces.labels == ["happy", "angry", "sad"]
    assert faces.class_id.tolist() == [1, 0, 2]
    np.testing.assert_allclose(faces.confidence, [0.7, 0.5, 0.6], rtol=1e-6)
    assert faces.probs.dtype == np.float32


def test_labels_need_probs():
    faces = Faces([[0, 0, 4, 4]])
    with pytest.raises(ValueError, match="not classified"):
        _ = faces.labels
    with pytest.raises(ValueError, match="not classified"):
        _ = faces.confidence


def test_to_records_is_json_ready():
    faces = Faces([[1, 2, 30, 40], [50, 60, 70, 80]], np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]), NAMES,
                  track_id=[4, 9])
    records = faces.to_records()
    assert json.loads(json.dumps(records)) == records  # plain Python types only
    first, second = records
    assert first["box_xyxy"] == [1, 2, 30, 40]
    assert first["label"] == "happy" and second["label"] == "angry"
    assert first["confidence"] == pytest.approx(0.7, abs=1e-4)
    assert list(first["probs"]) == list(NAMES)  # the model's column order
    assert first["probs"]["sad"] == pytest.approx(0.2, abs=1e-4)
    assert (first["track_id"], second["track_id"]) == (4, 9)


def test_to_records_before_classification_and_tracking():
    (rec,) = Faces([[1, 2, 3, 4]]).to_records()
    assert rec == {"box_xyxy": [1, 2, 3, 4], "track_id": None}


def test_with_probs_and_with_tracks_copy():
    faces = Faces([[0, 0, 10, 10]])
    classified = faces.with_probs(np.array([[0.2, 0.5, 0.3]]), NAMES)
    tracked = classified.with_tracks(np.array([3]))
    assert faces.probs is None and classified.track_id is None  # originals untouched
    assert tracked.labels == ["happy"] and tracked.track_id.tolist() == [3]
    assert tracked.track_id.dtype == np.int64
    smoothed = classified.with_tracks(np.array([3]), np.array([[0.9, 0.05, 0.05]]))
    assert smoothed.labels == ["angry"]


def test_clip_xyxy():
    out = clip_xyxy(np.array([[-10, -5, 50, 60], [90, 90, 130, 140], [200, 200, 300, 300]]), (100, 100))
    assert out.dtype == np.int32
    assert out[0].tolist() == [0, 0, 50, 60]
    assert out[1].tolist() == [90, 90, 100, 100]
    x1, y1, x2, y2 = out[2]
    assert (x2 - x1) * (y2 - y1) == 0  # wholly outside: no area


def test_square_at_edges_regrows_boxes_cut_by_the_frame():
    out = square_at_edges(np.array([
        [0, 100, 220, 378],    # cut by the left edge: grows to the left
        [348, 104, 551, 385],  # cut by the right edge: grows to the right
        [10, 0, 50, 30],       # cut by the top edge: grows upwards
        [10, 10, 50, 50],      # inside: unchanged
        [0, 5, 100, 40],       # touches the left edge but is short in height, away from an edge: unchanged
        [0, 0, 551, 600],      # wider than the frame is too narrow: grows evenly both ways
    ]), (551, 1137))
    assert out.tolist() == [[-58, 100, 220, 378], [348, 104, 629, 385], [10, -10, 50, 30], [10, 10, 50, 50],
                            [0, 5, 100, 40], [-24.5, 0, 575.5, 600]]
