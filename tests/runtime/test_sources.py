"""Frame sources: files in order with none dropped, images, folders, and every way a source can be bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.errors import SourceError
from runtime.sources import ImageSource, LiveSource, VideoSource, demo_image_path, open_source

VIDEO_FRAMES = 472


def test_video_every_frame_in_order(video_path: Path, video_frames: tuple):
    reference = [frame[::8, ::8] for frame in video_frames]  # enough to tell frames apart
    assert len(reference) == VIDEO_FRAMES
    with open_source(str(video_path)) as source:
        assert isinstance(source, VideoSource) and not source.live
        assert source.fps == pytest.approx(23.98, abs=0.05)
        frames = list(source)
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    for frame, ref in zip(frames, reference, strict=True):
        assert frame.image.shape == (360, 640, 3)
        np.testing.assert_array_equal(frame.image[::8, ::8], ref)  # same frame, same order: none dropped
    stamps = np.array([f.timestamp_s for f in frames])
    np.testing.assert_allclose(np.diff(stamps), 1 / source.fps, rtol=1e-6)
    assert stamps[0] == 0.0
    assert source.dropped == 0


def test_single_image(media_dir: Path):
    source = open_source(str(media_dir / "single_face.jpg"))
    assert isinstance(source, ImageSource)
    (frame,) = list(source)
    assert frame.image.shape == (562, 572, 3) and frame.image.dtype == np.uint8
    assert (frame.index, frame.name) == (0, "single_face.jpg")


def test_demo_source():
    assert demo_image_path().is_file()
    (frame,) = list(open_source("demo"))
    assert frame.image.shape == (512, 512, 3)


def test_folder_of_mixed_images_and_junk(media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(media_dir / "single_face.jpg", folder / "b_face.jpg")
    shutil.copy(media_dir / "grace_hopper_512x512.jpg", folder / "a_hopper.JPG")
    gray = cv2.cvtColor(cv2.imread(str(media_dir / "multi_face.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "d_gray.png"), gray)
    cv2.imwrite(str(folder / "e_deep.png"), (gray.astype(np.uint16) * 257))  # 16-bit PNG
    (folder / "c_junk.jpg").write_text("not an image")
    (folder / "c_empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    (folder / "sub.jpg").mkdir()  # a folder with an image suffix
    source = open_source(str(folder))
    assert isinstance(source, ImageSource)
    frames = list(source)
    assert [f.name for f in frames] == ["a_hopper.JPG", "b_face.jpg", "d_gray.png", "e_deep.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert frames[2].image.ndim == 2
    assert frames[3].image.dtype == np.uint8
    np.testing.assert_array_equal(frames[3].image, frames[2].image)
    assert sorted(source.skipped) == ["c_empty.png", "c_junk.jpg"]
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "c_junk.jpg" in err and "notes.txt" not in err


def test_empty_folder(tmp_path: Path):
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(tmp_path))


def test_missing_file(tmp_path: Path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"))


@pytest.mark.parametrize(("data", "words"), [
    (b"GIF89a garbage, not a JPEG at all", "does not decode"),
    (b"\xff\xd8\xff garbage", "truncated"),  # a JPEG header and nothing after it
    (b"", "is empty"),
], ids=["garbage", "jpeg-header-only", "empty"])
def test_undecodable_image(data: bytes, words: str, tmp_path: Path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(data)
    with pytest.raises(SourceError, match=words):
        open_source(str(path))


@pytest.mark.parametrize("kind", ["garbage", "truncated-header", "text"])
def test_bad_video_files(kind: str, tmp_path: Path, video_path: Path):
    path = tmp_path / ("notes.txt" if kind == "text" else "clip.mp4")
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "truncated-header":
        path.write_bytes(video_path.read_bytes()[:8000])  # cut inside the moov box
    else:
        path.write_text("hello\n")
    with pytest.raises(SourceError, match="does not decode as a video"):
        open_source(str(path))


def test_video_truncated_mid_stream_gives_the_frames_it_has(tmp_path: Path, video_path: Path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(video_path.read_bytes()[:200_000])
    with open_source(str(path)) as source:
        n = sum(1 for _ in source)
    assert 1 <= n < VIDEO_FRAMES


def test_missing_camera():
    if Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    with pytest.raises(SourceError, match="camera"):
        open_source("7")


def test_refused_url():
    with pytest.raises(SourceError, match=r"could not open stream http://127\.0\.0\.1:9/x\.mp4"):
        open_source("http://127.0.0.1:9/x.mp4")


# ---- LiveSource with a fake capture device -----------------------------------------------------


class FakeCapture:
    """A capture device that delivers ``n`` numbered frames, then fails."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.frames = [np.full((4, 4, 3), start + i, np.uint8) for i in range(n)]
        self.released = False

    def isOpened(self) -> bool:  # cv2's name
        return True

    def read(self):
        if self.released or not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None:
        self.released = True


def test_live_source_yields_frames_then_ends():
    source = LiveSource(lambda: FakeCapture(50), "fake camera")
    assert source.live and source.fps == 30.0
    values = [int(f.image[0, 0, 0]) for f in source]
    source.close()
    assert values and values == sorted(values) and len(set(values)) == len(values)  # newest first, never repeated
    assert values[-1] == 49  # the last frame is always delivered
    assert source.dropped == 50 - len(values)  # every frame is either yielded or counted as dropped


def test_live_source_reconnects_then_gives_up():
    opened = []

    def opener():  # two connections that deliver 3 frames each, then a dead source
        opened.append(1)
        return FakeCapture(3 if len(opened) <= 2 else 0, start=10 * len(opened))

    source = LiveSource(opener, "fake stream", reconnect=2, backoff_s=0.01)
    values = [int(f.image[0, 0, 0]) for f in source]
    source.close()
    # A connection that delivers resets the count: 1 reconnect that works, then 2 that do not.
    assert len(opened) == 4 and source.reconnects == 3
    assert values[-1] == 22  # the second connection's last frame
    assert len(values) + source.dropped == 6


def test_live_source_that_delivers_nothing():
    with pytest.raises(SourceError, match="delivers no frames"):
        LiveSource(lambda: FakeCapture(0), "fake camera")
