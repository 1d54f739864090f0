"""Pipeline: between whole-frame searches, faces are re-found near their boxes, and none is lost."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.detector import HaarDetector
from runtime.pipeline import SEARCH_LAG, Pipeline, inference_threads


@pytest.mark.parametrize(
    ("detect_every", "search_lag"), [pytest.param(1, 0, marks=pytest.mark.slow), (5, 0), (5, 4), (5, SEARCH_LAG)]
)
def test_tracked_detection_keeps_the_face(video_frames: tuple, detect_every: int, search_lag: int) -> None:
    pipe = Pipeline(detect_every=detect_every, search_lag=search_lag, provider="cpu")
    frames = with_face = 0
    ids = set()
    for frame in video_frames:
        faces = pipe.process(frame)
        frames += 1
        with_face += len(faces) > 0
        ids.update(faces.track_id.tolist())
    assert frames == 472
    assert with_face >= 0.99 * frames  # speed is never bought by losing faces
    if detect_every == 1:
        assert pipe.full_detections == frames
    else:  # whole-frame searches: every 5th frame (or once the last one is collected), a few more when a face was lost
        every = max(detect_every, search_lag)
        assert frames / (every + 1) <= pipe.full_detections < frames / 3
    assert len(ids) <= 3  # one woman: the track survives the whole clip (a re-acquisition or two at most)
    assert set(pipe.stage_s) == {"detect", "classify", "track", "composite"}


def test_reset_forgets_faces(media_dir: Path) -> None:
    pipe = Pipeline(provider="cpu")
    img = cv2.imread(str(media_dir / "single_face.jpg"))
    first = pipe.process(img)
    assert pipe.process(img).track_id.tolist() == first.track_id.tolist()
    pipe.reset()
    assert pipe.process(img).track_id.tolist() != first.track_id.tolist()


def test_no_tracker_classifies_each_frame_on_its_own(media_dir: Path) -> None:
    """``tracker=None``: no identities and no smoothing, the classifier's own probabilities."""
    pipe = Pipeline(provider="cpu", tracker=None)
    img = cv2.imread(str(media_dir / "single_face.jpg"))
    assert pipe.tracker is None
    faces = pipe.process(img)
    assert faces.track_id is None and len(faces) == 1
    direct = pipe.classifier.classify(img, pipe.detector.detect(img))
    np.testing.assert_allclose(faces.probs, direct.probs, atol=1e-6)
    out, again = pipe(img.copy())
    assert out.shape == img.shape and again.to_records()[0]["track_id"] is None


def test_background_search_gives_the_same_faces_on_every_run(video_frames: tuple) -> None:
    """The whole-frame search runs on its own thread, but joins on a fixed frame: no race decides the result."""
    runs = []
    for _ in range(2):
        pipe = Pipeline(provider="cpu", tracker=None, search_lag=3)
        runs.append([pipe.process(frame).xyxy.tolist() for frame in video_frames[:120]])
        pipe.close()
    assert runs[0] == runs[1]
    assert sum(map(len, runs[0])) >= 118


def test_background_search_runs_on_its_own_thread_and_cascade(video_frames: tuple,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    pipe = Pipeline(provider="cpu", search_lag=2, detect_every=3)
    search = pipe._search
    assert search is not None and search._detector.cascade is not pipe.detector.cascade
    threads = []
    real = search._detector.detect_gray
    monkeypatch.setattr(search._detector, "detect_gray",
                        lambda gray, angles=None: threads.append(threading.current_thread().name) or real(gray, angles))
    for frame in video_frames[:30]:
        assert len(pipe.process(frame)) >= 1
    assert threads and all(name.endswith("search") for name in threads)
    assert threading.current_thread().name not in threads
    pipe.close()
    assert search._thread is None


def test_reset_drops_a_search_in_flight(media_dir: Path, video_frames: tuple) -> None:
    """A search of the last video frame must never put its faces into the next, unrelated image."""
    pipe = Pipeline(provider="cpu", tracker=None, search_lag=3, detect_every=1000)
    pipe.process(video_frames[0])
    pipe.process(video_frames[1])  # no face lost: nothing to search yet
    pipe._search.submit(cv2.cvtColor(np.asarray(video_frames[2]), cv2.COLOR_BGR2GRAY), due=3)
    pipe.reset()
    blank = np.zeros((360, 640, 3), np.uint8)
    assert [len(pipe.process(blank)) for _ in range(6)] == [0] * 6


def test_merge_new_faces_and_dedupe() -> None:
    from runtime.detector import dedupe, merge_new_faces
    from runtime.faces import Faces

    current = Faces([[100, 100, 200, 200]])
    moved = Faces([[130, 110, 230, 210], [400, 50, 480, 130]])  # the same face, moved; and a new one
    merged = merge_new_faces(current, moved)
    assert merged.xyxy.tolist() == [[100, 100, 200, 200], [400, 50, 480, 130]]
    assert merge_new_faces(Faces.empty(), moved).xyxy.tolist() == moved.xyxy.tolist()
    assert merge_new_faces(current, Faces.empty()) is current
    twins = Faces([[100, 100, 200, 200], [104, 102, 204, 202], [300, 300, 340, 340]])
    assert dedupe(twins).xyxy.tolist() == [[100, 100, 200, 200], [300, 300, 340, 340]]


def test_an_image_of_another_size_carries_nothing_over(media_dir: Path, video_frames: tuple) -> None:
    """Issue 16: a happy face came out "surprise" when a pipeline reused across photos smoothed it
    with the last photo's emotion. A frame of another size is unrelated: the pipeline resets."""
    photo = cv2.imread(str(media_dir / "single_face.jpg"))
    fresh = Pipeline(provider="cpu").process(photo)
    reused = Pipeline(provider="cpu")
    for frame in video_frames[:10]:
        reused.process(frame)
    after = reused.process(photo)
    assert after.xyxy.tolist() == fresh.xyxy.tolist()
    np.testing.assert_allclose(after.probs, fresh.probs, atol=1e-6)
    assert after.track_id.tolist() != [0]  # a new identity, not the video's track


def _small_grace(media_dir: Path) -> np.ndarray:
    """Grace Hopper's photo at 200 px in the middle of a grey 1600-px photo: her face, about 90 px,
    is under the smallest face of the 320-wide video search (20 px there), not of the still search."""
    img = np.full((1600, 1600, 3), 128, np.uint8)
    img[700:900, 700:900] = cv2.resize(cv2.imread(str(media_dir / "grace_hopper_512x512.jpg")), (200, 200),
                                       interpolation=cv2.INTER_AREA)
    return img


def test_photos_take_the_still_search_and_video_the_fast_path(media_dir: Path, video_frames: tuple) -> None:
    """``stills=True``: the first frame after each reset is searched by the StillDetector;
    ``reset(still=False)``: the fast path of video."""
    small = _small_grace(media_dir)
    pipe = Pipeline(provider="cpu", stills=True)
    assert len(pipe.detector.detect(small)) == 0
    photo = pipe.process(small)
    assert len(photo) == 1
    pipe.reset(still=False)
    frame = video_frames[0]
    assert np.array_equal(pipe.process(frame).xyxy, pipe.detector.detect(frame).xyxy)
    pipe.reset()  # keeps "not a photo"
    assert len(pipe.process(small)) == 0
    pipe.reset(still=True)
    assert np.array_equal(pipe.process(small).xyxy, photo.xyxy)


def test_a_new_pipeline_keeps_the_fast_path_for_video(media_dir: Path) -> None:
    pipe = Pipeline(provider="cpu")
    assert len(pipe.process(_small_grace(media_dir))) == 0
    assert pipe._still_detector is None  # never made: a video run loads no extra cascade


def test_a_background_search_leaves_itself_a_core() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert inference_threads(0, 5, SEARCH_LAG) == max(1, cores - 1)
    assert inference_threads(3, 5, SEARCH_LAG) == 3  # asked for: kept
    assert inference_threads(0, 1, SEARCH_LAG) == 0  # every frame searched on the spot: no search thread
    assert inference_threads(0, 5, 0) == 0


def test_runtime_batch_defaults_are_the_pipelines() -> None:
    import inspect

    from runtime.batch import Settings

    defaults = inspect.signature(Pipeline).parameters
    for name in ("detect_every", "search_lag"):
        assert getattr(Settings(), name) == defaults[name].default
    detector = inspect.signature(HaarDetector).parameters
    for name in ("detect_width", "scale_factor", "min_neighbors", "min_size", "tilt_deg"):
        assert getattr(Settings(), name) == detector[name].default


def test_tilted_heads_keep_their_face_through_the_video_path(video_frames: tuple,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The clip turned by 20 degrees: the turned searches (one angle a background search, in turn)
    and the turned search around a lost box keep the face in nearly every frame."""
    h, w = video_frames[0].shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    frames = [cv2.warpAffine(f, turn, (w, h), borderMode=cv2.BORDER_REFLECT) for f in video_frames[200:320]]
    with_face = {}
    for tilt in (20.0, 0.0):
        pipe = Pipeline(provider="cpu", detector=HaarDetector(tilt_deg=tilt))
        angles: list = []  # what each background search turned the frame by
        search = pipe._search._detector

        def recorded(gray, turned=None, real=search.detect_gray, angles=angles):
            angles.append(turned)
            return real(gray, turned)

        monkeypatch.setattr(search, "detect_gray", recorded)
        with_face[tilt] = sum(len(pipe.process(f)) > 0 for f in frames)
        pipe.close()
        assert len(angles) >= 3 and set(angles) == ({(-20.0,), (20.0,)} if tilt else {()}), angles
    assert with_face[20.0] >= 0.95 * len(frames) and with_face[0.0] < 0.9 * len(frames), with_face
