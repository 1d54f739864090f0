"""Browser-playable video: H.264 in MP4 with the source's sound (PyAV, the [video] extra), checked with PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_user_error, run_cli
from tests.runtime.support import frames_in, listing

av = pytest.importorskip("av")

from runtime.av_video import probe  # noqa: E402 - needs PyAV

HEADLESS = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
CLIP_S = 472 / (24000 / 1001)


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _source_with(video_path: Path, dest: Path, audio_codec: str | None, seconds: float = 4.0) -> Path:
    """The first ``seconds`` of the real clip, its video copied as it is and its sound re-encoded to
    ``audio_codec`` (None: no sound at all), into ``dest``."""
    with av.open(str(video_path)) as src, av.open(str(dest), "w") as out:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        vout = out.add_stream_from_template(vin)
        aout = None
        if audio_codec is not None:
            aout = out.add_stream(audio_codec, rate=ain.codec_context.sample_rate)
            aout.layout = "stereo"
            fmt = aout.codec_context.codec.audio_formats[0].name
            resampler = av.AudioResampler(format=fmt, layout="stereo", rate=ain.codec_context.sample_rate)
            samples = 0
        for packet in src.demux(vin, ain):
            if packet.pts is None or float(packet.pts * packet.time_base) >= seconds:
                continue
            if packet.stream.type == "video":
                packet.stream = vout
                out.mux(packet)
            elif aout is not None:
                for frame in packet.decode():
                    for resampled in resampler.resample(frame):
                        resampled.pts, resampled.time_base = samples, Fraction(1, ain.codec_context.sample_rate)
                        samples += resampled.samples
                        out.mux(aout.encode(resampled))
        if aout is not None:
            out.mux(aout.encode(None))
    return dest


def test_mp4_is_h264_with_the_source_sound(video_path: Path, tmp_path: Path):
    out = tmp_path / "out.mp4"
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--output", str(out), env=HEADLESS,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = probe(out)
    assert info["video_codec"] == "h264" and (info["width"], info["height"]) == (640, 360)
    assert info["frames"] == 472 == frames_in(out)  # every frame, and OpenCV reads them too
    assert info["audio_codec"] == "aac"  # the source's AAC, copied
    assert info["audio_s"] == pytest.approx(CLIP_S, abs=0.1)
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"  # what browsers decode
        assert stream.average_rate == Fraction(24000, 1001)
        assert c.format.name.startswith("mov,mp4")
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # faststart: the index comes first


def test_a_run_stopped_early_keeps_sound_and_picture_in_step(video_path: Path, tmp_path: Path):
    out = tmp_path / "out.mp4"
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--output", str(out), "--max-frames", "48",
                   env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe(out)
    assert info["frames"] == 48
    assert info["audio_s"] == pytest.approx(48 * 1001 / 24000, abs=0.05)  # cut where the picture ends


@pytest.mark.parametrize(("suffix", "codec", "want"), [(".mkv", "flac", "flac"), (".mp4", "flac", "aac"),
                                                        (".mp4", None, None)])
def test_sound_that_mp4_cannot_hold_is_reencoded_and_no_sound_stays_none(
        suffix: str, codec: str | None, want: str | None, video_path: Path, tmp_path: Path):
    source = _source_with(video_path, tmp_path / "src.mkv", codec)
    assert probe(source)["audio_codec"] == codec
    out = tmp_path / f"out{suffix}"
    proc = run_cli("runtime", "--source", str(source), "--no-window", "--output", str(out), env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe(out)
    assert info["video_codec"] == "h264" and info["audio_codec"] == want
    assert info["frames"] == summary_of(proc.stdout)["frames"] >= 90
    with av.open(str(out)) as c:  # OpenCV reads this Matroska file's rate as 24000: FFmpeg's guess is used
        assert c.streams.video[0].average_rate == Fraction(24000, 1001)
    if want:  # the sound as long as the picture: in step to the end
        assert info["audio_s"] == pytest.approx(info["frames"] * 1001 / 24000, abs=0.03)


def test_mpeg4_on_request_and_h264_needs_pyav(video_path: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--output", str(tmp_path / "o.mp4"),
                   "--max-frames", "10", "--video-codec", "mpeg4", env=HEADLESS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert probe(tmp_path / "o.mp4")["video_codec"] == "mpeg4"
    (tmp_path / "o.mp4").unlink()
    without_av = "import sys; sys.modules['av'] = None; from runtime.live import cli; sys.exit(cli(sys.argv[1:]))"
    base = [sys.executable, "-c", without_av, "--source", str(video_path), "--no-window", "--max-frames", "10"]
    env = {**os.environ, **HEADLESS}
    proc = subprocess.run([*base, "--output", str(tmp_path / "o.mp4"), "--video-codec", "h264"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert_user_error(proc, 2, 'pip install "emocam[video]"')
    assert listing(tmp_path) == []
    proc = subprocess.run([*base, "--output", str(tmp_path / "o.mp4")], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)  # auto, on a base install: OpenCV's MPEG-4, as before
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert probe(tmp_path / "o.mp4")["video_codec"] == "mpeg4" and frames_in(tmp_path / "o.mp4") == 10
    note = next(line for line in proc.stderr.splitlines() if "note:" in line)  # and it says how to get H.264
    assert "browsers do not play" in note and 'pip install "emocam[video]"' in note


def test_h264_in_avi_is_refused(video_path: Path, tmp_path: Path):
    proc = run_cli("runtime", "--source", str(video_path), "--no-window", "--output", str(tmp_path / "o.avi"),
                   "--video-codec", "h264", env=HEADLESS)
    assert_user_error(proc, 2, ".avi", ".mp4")


def test_odd_frame_sides_are_padded(tmp_path: Path, media_dir: Path):
    """Frames with odd sides (a 1000x667 video with --panel is 1333 wide): H.264's 4:2:0 needs even sides,
    so one row and one column are added, nothing is cut."""
    import cv2

    from runtime.av_video import AvVideoWriter

    photo = cv2.imread(str(media_dir / "multi_face.jpg"))
    frames = [np.ascontiguousarray(photo[y:y + 101, x:x + 151]) for x, y in ((300, 220), (310, 222), (320, 224))]
    writer = AvVideoWriter(tmp_path / "odd.mp4", 10.0)
    for frame in frames:
        writer.write(frame)
    assert writer.close()
    info = probe(tmp_path / "odd.mp4")
    assert (info["width"], info["height"], info["frames"]) == (152, 102, 3)
    with av.open(str(tmp_path / "odd.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="bgr24")
    assert np.abs(first[:101, :151].astype(int) - frames[0]).mean() < 6  # the picture itself, uncut
    assert np.abs(first[101].astype(int) - first[100]).mean() < 6  # the added row repeats the edge


def test_a_full_disk_ends_an_h264_video_with_one_line(video_path: Path, tmp_path: Path):
    """The same rules as every output: the true cause in one line, exit 1, no temporary left, the earlier file kept."""
    earlier = tmp_path / "o.mp4"
    earlier.write_bytes(b"earlier")
    script = (f'ulimit -f 200 && exec "{sys.executable}" -m runtime --source "{video_path}" --no-window '
              f'--output o.mp4')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, **HEADLESS})
    assert_user_error(proc, 1, "file too large", "o.mp4")
    assert earlier.read_bytes() == b"earlier" and listing(tmp_path) == ["o.mp4"]
