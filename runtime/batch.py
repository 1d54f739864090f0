"""runtime-batch: video archives to one JSON Lines (and CSV) file per video, on this machine or on Ray.

``runtime-batch VIDEOS_OR_FOLDERS... --out DIR`` writes, for every video, ``DIR/<name>.jsonl`` and
``DIR/<name>.csv`` (a folder's videos keep their sub-folders under ``DIR``): the very records
``runtime-live --source VIDEO --jsonl ... --csv ...`` writes for that video, built by the same
code (:func:`runtime.records.frame_record`, :class:`runtime.outputs.Outputs`).

Design: why the engines agree, record for record
    Detection is stateful along a video: known faces are re-found near their last boxes, the
    whole frame is searched every few frames on a thread whose results join on a fixed later
    frame, and the tracker numbers and smooths faces frame after frame. So a video is never
    split: **one video is one task**, decoded and processed in frame order by one worker, with a
    fresh :class:`runtime.pipeline.Pipeline` (its own detector state and tracker) around the
    worker's model. What runs in parallel is videos.

    Within a video, faces are **batched across frames**: frames are detected and cropped
    (:meth:`Pipeline.prepare`) a chunk at a time (``--chunk``, 32 frames), the crops of the whole
    chunk go through ONE model call, and each frame is then finished in order
    (:meth:`Pipeline.finish`: its probabilities, the tracker). Detection never reads the
    tracker, and the model's answer for a face does not depend on the other faces of its batch
    (onnxruntime and OpenVINO on the CPU give bit-identical rows for any batch size; a test checks
    it), so the records are those of ``runtime-live``, frame by frame. A GPU engine may pick other
    kernels for other batch sizes: with ``--provider cuda`` a probability may differ in its last
    rounded digit.

    Both engines run the same :class:`VideoWorker` (model and detector loaded once per worker):

    * ``--engine local`` (the default): a pool of ``--workers`` processes on this machine.
    * ``--engine ray``: Ray Data (``pip install "emocam[ray]"``). The list of videos is a
      dataset with one block per video; ``map_batches`` with :class:`VideoWorker` as a callable
      class runs a fixed pool of actors (``ActorPoolStrategy``), each loading the model once and
      reading (decoding) its videos itself, all actors in parallel. ``--address`` joins a
      running cluster (``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on
      the others); without it Ray starts a local one. The videos and ``--out`` must be at the same
      path on every node (a shared file system), and every node needs emocam installed.

Files and resuming
    Each result is written to a temporary file beside it and renamed into place only when whole
    (:class:`runtime.files.TempFile`): a file under its final name is complete. A video is
    finished when its ``.jsonl`` (and, unless ``--no-csv``, its ``.csv``, renamed after it) exist;
    a batch that is run again (after a kill, a crash, a Ctrl-C) skips the finished videos and
    redoes only the rest (``--redo`` redoes all). The partial files of a killed run
    (``.NAME.partial-XXXX.jsonl``) are removed when their video is redone.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from models import SHIPPED_NAMES
from runtime.cli_support import THREADS, ArgumentParser, Number, UserError, default_of, path_arg, run_main, temp_stem

ENGINES = ("local", "ray")
CHUNK = 32  # frames whose faces go through one model call (bounded memory: crops only, never frames)
RAY_INSTALL = 'pip install "emocam[ray]"'
_NO_IMAGE = np.zeros((0, 0), np.uint8)  # a chunk keeps each frame's index, time and name, not its pixels


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to build its model and pipelines (picklable: it travels to workers).

    The defaults are those of ``runtime-live`` (the classes' own defaults).
    """

    model: str | None = None
    provider: str = "auto"
    threads: int = 0
    margin: float = 0.0
    detect_width: int = 320
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 40
    tilt_deg: float = 20.0
    detect_every: int = 5
    search_lag: int = 12  # runtime.pipeline.SEARCH_LAG (imported late: a test checks they agree)
    smoothing: float = 0.6
    chunk: int = CHUNK


@dataclass(frozen=True)
class Job:
    """One video and the files its records go to (strings: it travels to workers and through Ray).

    Attributes:
        video: The video file.
        jsonl: Its JSON Lines result.
        csv: Its CSV result, or "" for none.
    """

    video: str
    jsonl: str
    csv: str = ""

    def finished(self) -> bool:
        """Whether its results exist: each is renamed into place only when whole (see the module notes)."""
        return os.path.isfile(self.jsonl) and (not self.csv or os.path.isfile(self.csv))

    def remove_partials(self) -> None:
        """Remove the partial files a killed run left for this job's results."""
        for dest in filter(None, (self.jsonl, self.csv)):
            path = Path(dest)
            pattern = f".{glob.escape(temp_stem(path.name))}.partial-*{glob.escape(path.suffix)}"
            for stale in path.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    stale.unlink()


def _empty_result(job: Job) -> dict:
    return {"video": job.video, "jsonl": job.jsonl, "csv": job.csv, "frames": 0, "faces": 0,
            "frames_with_faces": 0, "model_calls": 0, "seconds": 0.0, "error": ""}


class VideoWorker:
    """The model and detector, loaded once; whole videos processed one after another.

    Used by both engines: in each process of the local pool, and as Ray Data's callable class
    (:meth:`__call__` takes a batch of jobs).

    Args:
        settings: The model, detector and tracker settings.
    """

    def __init__(self, settings: Settings | dict) -> None:
        from runtime.classifier import EmotionClassifier
        from runtime.detector import HaarDetector

        self.settings = settings if isinstance(settings, Settings) else Settings(**settings)
        s = self.settings
        self.classifier = EmotionClassifier(s.model, provider=s.provider, threads=s.threads, margin=s.margin)
        self.detector = HaarDetector(detect_width=s.detect_width, scale_factor=s.scale_factor,
                                     min_neighbors=s.min_neighbors, min_size=s.min_size, tilt_deg=s.tilt_deg)

    def _pipeline(self):  # -> Pipeline: a fresh detector state and tracker around the loaded model
        from runtime.pipeline import Pipeline
        from runtime.tracker import FaceTracker

        s = self.settings
        return Pipeline(detector=self.detector, classifier=self.classifier, tracker=FaceTracker(smoothing=s.smoothing),
                        detect_every=s.detect_every, search_lag=s.search_lag)

    def run(self, job: Job) -> dict:
        """Process one video into its result files; never raises (a failure is the result's ``error``).

        Returns:
            The video, its files, frames, faces, frames with faces, model calls, seconds, and
            ``error`` ("" when the results were written whole).
        """
        from runtime.errors import EmocamError
        from runtime.outputs import Outputs
        from runtime.records import frame_record
        from runtime.sources import VideoSource, open_source

        result = _empty_result(job)
        t0 = time.perf_counter()
        job.remove_partials()
        source = outputs = pipe = None
        try:
            source = open_source(job.video)
            if not isinstance(source, VideoSource):
                raise EmocamError(f"{job.video} is not a video: runtime-batch reads videos (photos: runtime-live)")
            pipe = self._pipeline()
            outputs = Outputs(None, Path(job.jsonl), source.fps, csv=Path(job.csv) if job.csv else None,
                              labels=tuple(self.classifier.labels))
            chunk: list[tuple] = []
            for frame in source:
                faces, crops = pipe.prepare(frame.image, copy=True)
                chunk.append((replace(frame, image=_NO_IMAGE), faces, crops))
                if len(chunk) >= self.settings.chunk:
                    self._finish(pipe, chunk, outputs, result, frame_record)
                    chunk = []
            self._finish(pipe, chunk, outputs, result, frame_record)
            outputs.close()
        except Exception as exc:  # one video's failure never stops the batch: it is reported, its files dropped
            if outputs is not None:
                outputs.discard()
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            result["error"] = message if isinstance(exc, EmocamError) else f"{type(exc).__name__}: {message}"
        finally:
            if source is not None:
                source.close()
            if pipe is not None:
                pipe.close()
        result["seconds"] = round(time.perf_counter() - t0, 3)
        return result

    def _finish(self, pipe, chunk: list[tuple], outputs, result: dict, frame_record: Callable) -> None:
        """One model call for the faces of every frame of ``chunk``, then each frame finished and written in order."""
        if not chunk:
            return
        counts = [len(faces) for _, faces, _ in chunk]
        if sum(counts):
            probs = self.classifier.predict(np.concatenate([crops for _, _, crops in chunk]))
            result["model_calls"] += 1
        else:
            probs = np.zeros((0, len(self.classifier.labels)), np.float32)
        start = 0
        for (frame, faces, _), n in zip(chunk, counts, strict=True):
            done = pipe.finish(faces, probs[start:start + n])
            start += n
            outputs.write(None, frame_record(frame, done), frame)
            result["frames"] += 1
            result["faces"] += n
            result["frames_with_faces"] += bool(n)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data's entry: a batch of jobs (columns ``video``, ``jsonl``, ``csv``) to a batch of results."""
        rows = [self.run(Job(str(v), str(j), str(c)))
                for v, j, c in zip(batch["video"], batch["jsonl"], batch["csv"], strict=True)]
        return {key: np.asarray([row[key] for row in rows]) for key in rows[0]} if rows else {}


# ---- what to process ------------------------------------------------------------------------------


def plan(inputs: Sequence[Path], out: Path, csv: bool = True) -> list[Job]:
    """The jobs for the videos among ``inputs``: files as given, and every video under a folder.

    A video given as a file goes to ``out/<stem>.jsonl``; one found under a folder keeps its
    path below that folder (``out/<sub>/<stem>.jsonl``).

    Raises:
        UserError: An input is missing or a photo, a folder holds no video, or two videos would
            write the same result.
    """
    from runtime.files import display
    from runtime.folders import VIDEO_SUFFIXES
    from runtime.sources import IMAGE_SUFFIXES

    jobs: list[Job] = []
    owners: dict[str, str] = {}
    for given in inputs:
        if not given.exists():
            raise UserError(f"{display(given)} does not exist: give video files or folders of videos")
        if given.is_dir():
            try:
                found = sorted(p for p in given.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            except OSError as exc:
                raise UserError(f"folder {display(given)} cannot be listed ({exc.strerror}): check its permissions"
                                ) from None
            if not found:
                raise UserError(f"folder {display(given)} holds no video ({', '.join(sorted(VIDEO_SUFFIXES))})")
            pairs = [(p, p.relative_to(given).with_suffix("")) for p in found]
        elif given.suffix.lower() in IMAGE_SUFFIXES:
            raise UserError(f"{display(given)} is a photo: runtime-batch reads videos (for photos: runtime-live "
                            "--source FOLDER --jsonl FILE)")
        else:
            pairs = [(given, Path(given.stem))]
        for video, stem in pairs:
            dest = out / stem
            key = os.path.normcase(str(dest))
            if key in owners:
                raise UserError(f"{display(video)} and {owners[key]} would both write {display(dest)}.jsonl: "
                                "rename one, or run them in separate batches with different --out")
            owners[key] = display(video)
            jobs.append(Job(str(video), f"{dest}.jsonl", f"{dest}.csv" if csv else ""))
    return jobs


# ---- the engines ----------------------------------------------------------------------------------

_worker: VideoWorker | None = None  # the local pool's worker, one per process


def _init_local(settings: Settings) -> None:
    """A pool process: Ctrl-C is the parent's to handle (it ends the pool), the model is loaded once."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = VideoWorker(settings)


def _run_local(job: Job) -> dict:
    return _worker.run(job)


def run_local(jobs: Sequence[Job], settings: Settings, workers: int) -> Iterator[dict]:
    """Process ``jobs`` in a pool of ``workers`` processes; yield each video's result as it finishes.

    Stopping the iteration (Ctrl-C, or a generator closed) ends the pool at once: unfinished
    videos leave no result, only partial files that the next run removes.
    """
    import multiprocessing

    if not jobs:
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_local, (settings,))
    try:
        yield from pool.imap_unordered(_run_local, jobs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def ray_available() -> bool:
    """Whether Ray with Ray Data is installed (the ``[ray]`` extra)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
    except (ImportError, ValueError):
        return False


def _ray_init(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local Ray, unless this process already did. True when it did now."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    return True


def run_ray(jobs: Sequence[Job], settings: Settings, workers: int, address: str | None = None) -> Iterator[dict]:
    """Process ``jobs`` with Ray Data: a fixed pool of ``workers`` actors, each loading the model once.

    Joins the cluster at ``address`` (or the one ``ray.init`` already made in this process);
    without either, starts a local one and stops it at the end.
    """
    import ray

    if not jobs:
        return
    started = _ray_init(address)
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines: the per-video lines say more
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for name in ("print_on_execution_start", "enable_operator_progress_bars"):
            if hasattr(context, name):
                setattr(context, name, False)
        items = [asdict(job) for job in jobs]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one block per video
        results = dataset.map_batches(
            VideoWorker, fn_constructor_kwargs={"settings": asdict(settings)}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=max(1, settings.threads),
        )
        for row in results.iter_rows():
            yield {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
    finally:
        if started:
            ray.shutdown()


# ---- the command ----------------------------------------------------------------------------------


def _parser() -> ArgumentParser:
    from runtime.backends import PROVIDERS
    from runtime.classifier import EmotionClassifier
    from runtime.live import add_detector_flags
    from runtime.tracker import FaceTracker

    p = ArgumentParser(prog="runtime-batch",
                       description="Video archives to one JSON Lines (and CSV) file per video, the records of "
                                   "runtime-live, on this machine (a process pool) or on a Ray cluster.")
    p.add_argument("inputs", nargs="+", type=path_arg, metavar="VIDEO_OR_FOLDER",
                   help="video files, and folders searched (with their sub-folders) for videos")
    p.add_argument("--out", type=path_arg, required=True,
                   help="folder of the results: <name>.jsonl and <name>.csv per video (made if missing)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help=f"local: a process pool on this machine; ray: Ray Data, local or a cluster ({RAY_INSTALL})")
    p.add_argument("--workers", type=Number(int, 0, 4096), default=0,
                   help="videos processed at once (0: one per CPU core, at most one per video)")
    p.add_argument("--address", default=None,
                   help="--engine ray: the Ray cluster to join (auto, or HEAD:6379); default: start a local one")
    p.add_argument("--no-csv", action="store_true", help="write only the JSON Lines")
    p.add_argument("--redo", action="store_true", help="process every video again, even those already finished")
    p.add_argument("--chunk", type=Number(int, 1, 4096), default=CHUNK,
                   help="frames of a video whose faces go through one model call")
    p.add_argument("--model", type=path_arg, default=None,
                   help=f"ONNX model from export-onnx, or a shipped one: {SHIPPED_NAMES} (MODEL_CARD.md)")
    p.add_argument("--provider", choices=PROVIDERS, default=default_of(EmotionClassifier, "provider"),
                   help="inference engine, as runtime-live's")
    p.add_argument("--threads", type=THREADS, default=default_of(EmotionClassifier, "threads"),
                   help="inference threads per worker (0: the cores shared among the workers; Ray: 1)")
    g = p.add_argument_group("detector and tracker (as runtime-live's)")
    add_detector_flags(g)
    g.add_argument("--margin", type=Number(float, 0.0, 1.0), default=default_of(EmotionClassifier, "margin"),
                   help="crop margin around each face (fraction of its size)")
    g.add_argument("--smoothing", type=Number(float, 0.0, 0.99), default=default_of(FaceTracker, "smoothing"),
                   help="weight of the past in per-face probability smoothing")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The workers' settings from the command line (the model path resolved here, once)."""
    from runtime.classifier import resolve_model_path

    return Settings(model=str(resolve_model_path(args.model)), provider=args.provider, threads=args.threads,
                    margin=args.margin, detect_width=args.detect_width, scale_factor=args.scale_factor,
                    min_neighbors=args.min_neighbors, min_size=args.min_size, tilt_deg=args.tilt_deg,
                    detect_every=args.detect_every,
                    search_lag=args.search_lag, smoothing=args.smoothing, chunk=args.chunk)


def _prepare_out(out: Path, jobs: Iterable[Job]) -> None:
    from runtime.files import display, is_stream

    if is_stream(out) or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {display(out)} is not a folder: give a folder (it is made if missing)")
    try:
        for folder in sorted({Path(job.jsonl).parent for job in jobs}):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {display(out)} cannot be made ({exc.strerror}): choose another folder") from None
    from runtime.cli_support import check_output_path

    check_output_path(out / "probe", "--out")


def run_batch(jobs: Sequence[Job], settings: Settings, engine: str = "local", workers: int = 0,
              address: str | None = None, redo: bool = False,
              report: Callable[[dict, int, int], None] | None = None) -> dict:
    """Process the unfinished ``jobs`` on ``engine``; the batch's summary.

    Args:
        jobs: From :func:`plan`.
        settings: The workers' settings.
        engine: ``local`` or ``ray``.
        workers: Videos at once (0: one per CPU core, at most one per video).
        address: ``--engine ray``: the cluster to join.
        redo: Process finished videos again.
        report: Called with each video's result, how many are done, and how many there are to do.

    Returns:
        Videos given, processed, skipped (already finished) and failed (with their errors),
        frames, faces, model calls, wall seconds, videos per hour and frames per second.
    """
    todo = [job for job in jobs if redo or not job.finished()]
    cpus = os.cpu_count() or 1
    started = False
    if engine == "ray" and todo:
        import ray

        started = _ray_init(address)  # before the defaults: --workers 0 is the cluster's CPUs
        cpus = int(ray.cluster_resources().get("CPU", cpus))
    workers = max(1, min(workers or cpus, len(todo) or 1))
    if settings.threads == 0:
        settings = replace(settings, threads=1 if engine == "ray" else max(1, cpus // workers))
    t0 = time.perf_counter()
    results: list[dict] = []
    stream = run_ray(todo, settings, workers, address) if engine == "ray" else run_local(todo, settings, workers)
    try:
        for result in stream:
            results.append(result)
            if report is not None:
                report(result, len(results), len(todo))
    finally:
        if hasattr(stream, "close"):
            stream.close()
        if started:
            import ray

            ray.shutdown()
    wall = time.perf_counter() - t0
    ok = [r for r in results if not r["error"]]
    frames = sum(r["frames"] for r in ok)
    return {
        "videos": len(jobs), "processed": len(ok), "skipped_finished": len(jobs) - len(todo),
        "failed": [{"video": r["video"], "error": r["error"]} for r in results if r["error"]],
        "frames": frames, "faces": sum(r["faces"] for r in ok), "model_calls": sum(r["model_calls"] for r in ok),
        "wall_s": round(wall, 3), "videos_per_hour": round(len(ok) * 3600 / wall, 1) if wall > 0 and ok else 0.0,
        "frames_per_s": round(frames / wall, 2) if wall > 0 else 0.0,
        "engine": engine, "workers": workers, "threads_per_worker": settings.threads,
    }


def _say(result: dict, done: int, total: int) -> None:
    from runtime.files import display

    name = display(result["video"])
    if result["error"]:
        print(f"runtime-batch: [{done}/{total}] {name}: failed: {result['error']}", file=sys.stderr)
        return
    print(f"runtime-batch: [{done}/{total}] {name}: {result['frames']} frames, {result['frames_with_faces']} with "
          f"faces, {result['model_calls']} model calls, {result['seconds']:.1f} s -> {display(result['jsonl'])}",
          file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """runtime-batch: one JSON Lines (and CSV) file per video of an archive."""
    from runtime.errors import EXIT_FAILED
    from runtime.summary import print_summary

    args = _parser().parse_args(argv)
    if args.engine == "ray" and not ray_available():
        raise UserError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}")
    if args.address is not None and args.engine != "ray":
        raise UserError("--address names a Ray cluster: use it with --engine ray")
    jobs = plan(args.inputs, args.out, csv=not args.no_csv)
    _prepare_out(args.out, jobs)
    settings = settings_from(args)
    from runtime.classifier import EmotionClassifier

    EmotionClassifier(settings.model, provider=settings.provider, threads=1)  # a bad model: one line now, not N
    left = sum(1 for job in jobs if args.redo or not job.finished())
    videos = "1 video" if len(jobs) == 1 else f"{len(jobs)} videos"
    print(f"runtime-batch: {videos}, {len(jobs) - left} already finished, {left} to do "
          f"on the {args.engine} engine", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_batch(jobs, settings, args.engine, args.workers, args.address, args.redo, report=_say)
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary["out"] = str(args.out)
    print_summary(json.dumps(summary))
    return EXIT_FAILED if summary["failed"] else 0


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM stops the batch as Ctrl-C does: the workers are ended, finished videos stay finished."""
    raise KeyboardInterrupt


cli = run_main(main, "runtime-batch")

if __name__ == "__main__":  # python -m runtime.batch: through the module (its workers pickle runtime.batch's names)
    from runtime.console import runtime_batch

    sys.exit(runtime_batch())
