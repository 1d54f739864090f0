"""FaceTracker: identity by overlap, probability smoothing, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.faces import Faces
from runtime.tracker import FaceTracker, iou_matrix

NAMES = ("angry", "happy", "sad")
ANGRY = [0.9, 0.05, 0.05]
HAPPY = [0.05, 0.9, 0.05]


def faces(boxes, probs=None) -> Faces:
    boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
    if probs is None:
        return Faces(boxes)
    return Faces(boxes, np.asarray(probs, np.float32).reshape(len(boxes), -1), NAMES)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = iou_matrix(a, b)
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])


def test_same_face_keeps_its_id_while_it_moves():
    tracker = FaceTracker()
    ids = []
    for step in range(20):
        x = 100 + 4 * step  # drifts 80 px in 20 frames, a little each frame
        ids.append(int(tracker.update(faces([[x, 50, x + 100, 150]], [ANGRY])).track_id[0]))
    assert ids == [ids[0]] * 20


def test_smoothing_damps_a_sudden_change():
    tracker = FaceTracker(smoothing=0.6)
    box = [[10, 10, 110, 110]]
    for _ in range(5):
        tracker.update(faces(box, [ANGRY]))
    out = tracker.update(faces(box, [HAPPY]))  # one frame of a different expression
    np.testing.assert_allclose(out.probs[0], 0.6 * np.array(ANGRY) + 0.4 * np.array(HAPPY), atol=1e-6)
    assert out.labels == ["angry"]  # damped: the label does not flip on one frame
    labels = [tracker.update(faces(box, [HAPPY])).labels[0] for _ in range(5)]
    assert labels[-1] == "happy"  # but a lasting change comes through


def test_no_smoothing_passes_probabilities_through():
    tracker = FaceTracker(smoothing=0.0)
    box = [[10, 10, 110, 110]]
    tracker.update(faces(box, [ANGRY]))
    out = tracker.update(faces(box, [HAPPY]))
    np.testing.assert_allclose(out.probs[0], HAPPY, atol=1e-6)


def test_smoothing_is_per_face():
    tracker = FaceTracker(smoothing=0.6)
    a, b = [10, 10, 110, 110], [300, 10, 400, 110]
    tracker.update(faces([a, b], [ANGRY, HAPPY]))
    out = tracker.update(faces([b, a], [HAPPY, ANGRY]))  # order swapped: identities follow the boxes
    np.testing.assert_allclose(out.probs, [HAPPY, ANGRY], atol=1e-6)


def test_two_faces_get_distinct_ids_that_follow_the_boxes():
    tracker = FaceTracker()
    a, b = [10, 10, 110, 110], [300, 10, 400, 110]
    first = tracker.update(faces([a, b], [ANGRY, HAPPY]))
    id_a, id_b = first.track_id.tolist()
    assert id_a != id_b
    swapped = tracker.update(faces([b, a], [HAPPY, ANGRY]))
    assert swapped.track_id.tolist() == [id_b, id_a]


def test_overlapping_faces_are_not_merged():
    tracker = FaceTracker()
    out = tracker.update(faces([[0, 0, 100, 100], [10, 10, 110, 110]], [ANGRY, HAPPY]))
    out = tracker.update(faces([[0, 0, 100, 100], [10, 10, 110, 110]], [ANGRY, HAPPY]))
    assert len(set(out.track_id.tolist())) == 2


def test_a_track_continues_one_face_only():
    tracker = FaceTracker()
    (first,) = tracker.update(faces([[0, 0, 100, 100]], [ANGRY])).track_id.tolist()
    # A second face appears overlapping the first: both overlap the one track, only the better one continues it.
    out = tracker.update(faces([[10, 10, 110, 110], [0, 0, 100, 100]], [HAPPY, ANGRY]))
    assert out.track_id[1] == first and out.track_id[0] != first
    np.testing.assert_allclose(out.probs[0], HAPPY, atol=1e-6)  # the newcomer inherits no history


def test_a_jump_starts_a_new_track():
    tracker = FaceTracker()
    first = tracker.update(faces([[0, 0, 100, 100]], [ANGRY]))
    moved = tracker.update(faces([[400, 400, 500, 500]], [HAPPY]))
    assert moved.track_id[0] != first.track_id[0]
    np.testing.assert_allclose(moved.probs[0], HAPPY, atol=1e-6)  # a new face starts from its own probs


@pytest.mark.parametrize(("gap", "same"), [(1, True), (5, True), (6, False), (12, False)])
def test_tracks_survive_max_missed_frames_then_expire(gap, same):
    tracker = FaceTracker(max_missed=5)
    box = [[10, 10, 110, 110]]
    first = int(tracker.update(faces(box, [ANGRY])).track_id[0])
    for _ in range(gap):
        assert len(tracker.update(Faces.empty())) == 0
    again = tracker.update(faces(box, [HAPPY]))
    assert (int(again.track_id[0]) == first) is same
    if not same:  # an expired track's history is gone, so nothing is smoothed in
        np.testing.assert_allclose(again.probs[0], HAPPY, atol=1e-6)


def test_reset_forgets_tracks():
    tracker = FaceTracker()
    box = [[10, 10, 110, 110]]
    first = int(tracker.update(faces(box, [ANGRY])).track_id[0])
    tracker.reset()
    again = tracker.update(faces(box, [HAPPY]))
    assert int(again.track_id[0]) != first
    np.testing.assert_allclose(again.probs[0], HAPPY, atol=1e-6)


def test_unclassified_faces_are_tracked():
    tracker = FaceTracker()
    out = tracker.update(faces([[0, 0, 50, 50], [100, 0, 150, 50]]))
    assert out.probs is None
    assert len(set(out.track_id.tolist())) == 2


def test_tracker_on_the_real_video(video_frames, detector, classifier):
    """The one face of the first 25 real frames keeps one id, and its probabilities stay a distribution."""
    tracker = FaceTracker()
    ids = []
    for frame in video_frames[:25]:
        out = tracker.update(classifier.classify(frame, detector.detect(frame)))
        ids.extend(out.track_id.tolist())
        if len(out):
            np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-4)
    assert len(ids) >= 24
    assert ids.count(ids[0]) >= 24


def test_bad_smoothing():
    with pytest.raises(ValueError, match="smoothing"):
        FaceTracker(smoothing=1.0)
