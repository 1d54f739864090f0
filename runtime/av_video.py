"""Browser-playable video through PyAV (the ``[video]`` extra): H.264 in MP4, with the source's sound.

OpenCV's writer makes MPEG-4 Part 2 video that browsers and phones do not play, and drops the
sound. PyAV bundles FFmpeg with libx264: :class:`AvVideoWriter` encodes H.264 (yuv420p, High
profile, ``+faststart`` so that a browser starts playing before the whole file is down) and
copies the source's audio beside it (AAC and MP3 as they are; any other codec is re-encoded
to AAC). The audio is cut where the video ends, so a run stopped early stays in sync.

The rules of :mod:`runtime.outputs` hold: a temporary file beside the destination, watched
while it grows, decoded back when finished (the frame count, the codec, the sound) and only then
renamed into place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import EXIT_USAGE, OutputError
from runtime.files import TempFile, display, failure_cause, opencv_path

H264_SUFFIXES = (".mp4", ".m4v", ".mkv")  # containers written with H.264 when PyAV is there
#: Audio codecs each container takes as they are; any other is re-encoded to AAC.
AUDIO_COPY = {".mp4": {"aac", "mp3"}, ".m4v": {"aac", "mp3"}, ".mkv": {"aac", "mp3", "opus", "vorbis", "flac"}}
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}  # about 3.7 ms a 640x360 frame on a 2-core CPU


def av_available() -> bool:
    """True when PyAV (the ``[video]`` extra) is installed."""
    try:
        import av  # noqa: F401 - imported to know it works, not only that it is there
    except ImportError:
        return False
    return True


def _cause(path: Path, exc: Exception) -> str:
    """The true cause of a failed PyAV call on ``path`` (a full disk, the size limit, or FFmpeg's words)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return failure_cause(path, exc)
    cause = failure_cause(path)
    return cause if not cause.startswith("the writer failed") else f"{str(exc).strip()[:160]} ({display(path)})"


class AudioCopy:
    """The first audio stream of ``source``, muxed into ``out`` as the video is written.

    Args:
        source: The source video file (None or a file without sound: no audio).
        out: The open output container.
        suffix: The output's suffix (which audio codecs it takes as they are).
    """

    def __init__(self, source: Path | None, out, suffix: str) -> None:
        import av

        self._in = None
        self.stream = None
        self.codec = ""
        self._packets: Iterator = iter(())
        self._pending = None
        self._encoder = self._resampler = self._decoder = None
        self._offset_s = 0.0
        self._samples = 0  # samples given to the encoder: the next frame's time stamp
        if source is None:
            return
        try:
            self._in = av.open(str(source))
        except (av.FFmpegError, OSError):  # OpenCV read it: the video is written anyway, without sound
            return
        audio = self._in.streams.audio
        if not audio:
            self.close()
            return
        src = audio[0]
        self.codec = src.codec_context.name
        video = self._in.streams.video
        if video and video[0].start_time is not None and video[0].time_base is not None:
            self._offset_s = float(video[0].start_time * video[0].time_base)  # OpenCV's frame 0 is this moment
        if self.codec in AUDIO_COPY.get(suffix, set()):
            self.stream = out.add_stream_from_template(src)
        else:
            rate = src.codec_context.sample_rate or 48000
            self.stream = out.add_stream("aac", rate=rate)
            self.stream.layout = src.codec_context.layout.name if src.codec_context.layout else "stereo"
            self._resampler = av.AudioResampler(format="fltp", layout=self.stream.layout, rate=rate)
            self._encoder = self.stream
            self._decoder = src.codec_context
        self._packets = self._in.demux(src)

    def _next(self):
        """The next audio packet with a time stamp, or None at the end."""
        while self._pending is None:
            packet = next(self._packets, None)
            if packet is None:
                return None
            if packet.pts is not None and packet.dts is not None:
                self._pending = packet
        return self._pending

    def mux_until(self, out, end_s: float) -> None:
        """Mux the source's audio up to ``end_s`` seconds of the output's time (later audio stays pending)."""
        if self.stream is None:
            return
        while (packet := self._next()) is not None:
            t = float(packet.pts * packet.time_base) - self._offset_s
            if t >= end_s:
                return
            self._pending = None
            if t < 0:
                continue
            if self._encoder is None:
                shift = round(self._offset_s / packet.time_base)
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = self.stream
                out.mux(packet)
                continue
            for frame in packet.decode():
                for resampled in self._resampler.resample(frame):
                    self._encode(out, resampled)

    def _encode(self, out, frame) -> None:
        """Encode ``frame``, numbered by the samples before it (the sound starts with the picture)."""
        frame.pts, frame.time_base = self._samples, Fraction(1, self.stream.rate)
        self._samples += frame.samples
        out.mux(self._encoder.encode(frame))

    def finish(self, out, end_s: float) -> None:
        """Mux the audio up to where the video ends and flush the encoder (:meth:`close` closes the source)."""
        if self.stream is not None:
            self.mux_until(out, end_s)
            if self._encoder is not None:
                for frame in self._decoder.decode(None):  # the decoder's last frames (of packets already fed)
                    for resampled in self._resampler.resample(frame):
                        self._encode(out, resampled)
                for resampled in self._resampler.resample(None):
                    self._encode(out, resampled)
                out.mux(self._encoder.encode(None))

    def close(self) -> None:
        """Close the source, after the output (its audio stream is made from the source's: PyAV
        crashes when an output outlives the input its stream was copied from, PyAV #1253)."""
        self._pending = None
        with contextlib.suppress(Exception):
            self._packets.close()  # the demuxer's generator, before the container it reads
        self._packets = iter(())
        if self._in is not None:
            with contextlib.suppress(Exception):
                self._in.close()
            self._in = None


def probe(path: Path) -> dict:
    """What a video file holds, read back with PyAV: ``video_codec``, ``frames`` (video packets, by
    reading the whole file; the first is decoded), ``audio_codec`` (None without sound),
    ``audio_s`` (where the sound ends, in seconds), ``width`` and ``height``.

    Raises:
        av.FFmpegError: The file does not open or its first frame does not decode.
    """
    import av

    with av.open(str(path)) as c:
        video = c.streams.video[0] if c.streams.video else None
        audio = c.streams.audio[0] if c.streams.audio else None
        vc = video.codec_context if video else None
        info = {"video_codec": vc.name if vc else None, "frames": 0, "width": vc.width if vc else 0,
                "height": vc.height if vc else 0, "audio_codec": audio.codec_context.name if audio else None,
                "audio_s": 0.0}
        decoded = 0
        for packet in c.demux(*[s for s in (video, audio) if s is not None]):
            if packet.pts is None or not packet.size:
                continue
            if packet.stream.type == "video":
                info["frames"] += 1
                if not decoded:  # the encoder's first frames come out a few packets late
                    decoded = len(packet.decode())
            else:
                info["audio_s"] = max(info["audio_s"], float((packet.pts + (packet.duration or 0)) * packet.time_base))
        if info["frames"] and not decoded:  # a short file: its frames come out when the decoder is flushed
            decoded = len(video.codec_context.decode(None))
        if not decoded:
            info["frames"] = 0  # nothing decodes: as good as no frame
        info["audio_s"] = round(info["audio_s"], 3)
    return info


class AvVideoWriter:
    """The annotated video as H.264 (with the source's sound), into a temporary file renamed when whole.

    Args:
        path: Destination (``.mp4``, ``.m4v``, ``.mkv``).
        fps: Frame rate written into the file (0 or unknown: 25).
        audio_from: The source video file whose sound is copied (None: no sound).
    """

    def __init__(self, path: Path, fps: float, audio_from: Path | None = None) -> None:
        from runtime.outputs import CHECK_EVERY

        self.path = path
        self.suffix = path.suffix.lower()
        if self.suffix not in H264_SUFFIXES:
            raise OutputError(f"{display(path)}: H.264 is written as {', '.join(H264_SUFFIXES)}", EXIT_USAGE)
        self.rate = Fraction(fps if 0 < fps <= 1000 else 25.0).limit_denominator(1001)
        self.audio_from = audio_from
        self.frames = 0
        self.size_wh: tuple[int, int] | None = None
        self.audio_codec: str | None = None
        self._check_every = CHECK_EVERY
        self._out = self._stream = self._audio = None
        self._tmp: TempFile | None = None
        self._dir_fd: int | None = None

    def _open(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        self.size_wh = (w, h)
        self._tmp = TempFile(self.path)
        self._tmp.close_fd()  # FFmpeg opens it by name
        name, self._dir_fd = opencv_path(self._tmp.path)
        try:
            options = {"movflags": "+faststart"} if self.suffix != ".mkv" else {}
            self._out = av.open(name, "w", format="matroska" if self.suffix == ".mkv" else "mp4", options=options)
            self._stream = self._out.add_stream("libx264", rate=self.rate, options=dict(X264_OPTIONS))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2  # yuv420p: even sides
            self._stream.pix_fmt = "yuv420p"
            self._audio = AudioCopy(self.audio_from, self._out, self.suffix)
            self.audio_codec = self._audio.codec or None
        except Exception as exc:  # FFmpeg refused the size or the file: one line, nothing left
            cause = _cause(self.path, exc)
            self._abandon()
            raise OutputError(f"cannot write video {display(self.path)}: {cause}") from None

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame (resized to the first frame's size if it differs).

        Raises:
            OutputError: The encoder or the file failed (the real cause is named).
        """
        import av

        if self._out is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self.size_wh:
            frame = cv2.resize(frame, self.size_wh)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        w, h = self.size_wh
        if w % 2 or h % 2:
            frame = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        try:
            self._audio.mux_until(self._out, float(self.frames / self.rate))  # the sound up to this frame
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            picture.pts = self.frames
            picture.time_base = 1 / self.rate
            self._out.mux(self._stream.encode(picture))
        except Exception as exc:
            self._fail(exc)
        self.frames += 1
        if self.frames % self._check_every == 0:
            from runtime.outputs import space_problem

            problem = space_problem(self._tmp.path, self.path)
            if problem:
                self._abandon()
                raise OutputError(f"could not write {display(self.path)}: {problem}")

    def _fail(self, exc: Exception) -> None:
        cause = _cause(self.path, exc)  # before the partial file is removed (it may fill the disk)
        self._abandon()
        raise OutputError(f"could not write {display(self.path)}: {cause}") from None

    def close(self) -> bool:
        """Flush the encoder, finish the sound, check the file, rename it into place.

        Returns:
            True when a video was written (at least one frame came).

        Raises:
            OutputError: The file is not whole (the real cause is named); the destination is as it was.
        """
        if self._out is None:
            return False
        try:
            self._out.mux(self._stream.encode(None))
            self._audio.finish(self._out, float(self.frames / self.rate))
            self._out.close()
        except Exception as exc:
            self._fail(exc)
        self._out = None
        self._audio.close()  # the source only now: the output was made from it
        self._close_dir()
        try:
            found = probe(self._tmp.path)
        except Exception:  # a file that does not open at all
            found = {"video_codec": None, "frames": 0, "audio_codec": None}
        problems = []
        if found["video_codec"] != "h264":
            problems.append(f"its video is {found['video_codec']}, not h264")
        if found["frames"] != self.frames:
            problems.append(f"{found['frames']} of {self.frames} frames were readable")
        if self.audio_codec and not found["audio_codec"]:
            problems.append("the sound is missing")
        if problems:
            cause = failure_cause(self.path)
            self._tmp.discard()
            raise OutputError(f"could not write {display(self.path)}: {cause}; {', '.join(problems)}, "
                              "and it was not kept")
        self._tmp.commit()
        return True

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            import os

            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None

    def _abandon(self) -> None:
        if self._out is not None:
            with contextlib.suppress(Exception):
                self._out.close()
            self._out = None
        if self._audio is not None:  # after the output (see AudioCopy.close)
            self._audio.close()
        self._close_dir()
        if self._tmp is not None:
            self._tmp.discard()

    def discard(self) -> None:
        """Drop the partial video (after a failure): the destination stays as it was."""
        self._abandon()
