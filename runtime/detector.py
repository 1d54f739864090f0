"""Face detection with OpenCV's Haar frontal-face cascade, on a downscaled grayscale frame, and
whole-frame searches on a thread of their own (:class:`BackgroundSearch`); for photos, a thorough
search with several cascades and rotations (:class:`StillDetector`)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ModelError
from runtime.faces import Faces, clip_xyxy
from runtime.image import to_gray

TURNED_SF = 1.2  # pyramid step of the turned whole-frame searches: on the clip turned by +-20 and 12 degrees,
# the same frames with a face as 1.1, for 70 % of the time
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"  # ships with opencv-python 4.x


def shipped_cascade(file_name: str) -> Path:
    """The path of a cascade XML that ships with opencv-python.

    Raises:
        ModelError: This OpenCV has no Haar cascades (opencv-python 5.x).
    """
    if not hasattr(cv2, "data"):
        raise ModelError('this OpenCV has no Haar cascades: pip install "opencv-python>=4.8,<5"')
    return Path(cv2.data.haarcascades) / file_name


def read_cascade(path: Path) -> cv2.CascadeClassifier:
    """A loaded cascade.

    Raises:
        ModelError: ``path`` is missing or not a Haar cascade XML.
    """
    if not path.is_file():
        raise ModelError(f"Haar cascade {path} does not exist: reinstall opencv-python>=4.8,<5")
    try:
        cascade = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError):  # OpenCV 4.x raises (wrapped in SystemError) on a non-XML file
        cascade = None
    if cascade is None or cascade.empty():
        raise ModelError(f"{path} is not a valid Haar cascade XML")
    return cascade


class HaarDetector:
    """Haar cascade face detector; the cascade is loaded once.

    Detection runs on a grayscale copy of the frame scaled so that its width is at most
    ``detect_width``; boxes are scaled back to frame pixels.

    Args:
        cascade_path: Cascade XML (default: OpenCV's frontal-face cascade).
        detect_width: Width in pixels of the frame the cascade sees (0: full size).
        scale_factor: Image-pyramid step of ``detectMultiScale`` (smaller: slower, finds more).
        min_neighbors: Overlapping hits a face needs (larger: fewer false faces).
        min_size: Smallest face side to find, in frame pixels.
        near_scale_factor: Pyramid step of the searches around known faces
            (:meth:`detect_near`): they look for one face of about a known size, so a coarser step
            costs little: on the clip, 1.2 kept the face as often as 1.1 (98.3 % against 98.5 %
            of frames, before the wider retry) in 70 % of the time.
        tilt_deg: Tilted heads: the frame turned by -``tilt_deg`` and +``tilt_deg`` degrees is also
            searched (``angles``), by whole-frame searches and by :meth:`detect_near` for a face
            that the upright search around its box lost; 0: upright only. A face found turned
            must be confirmed as :class:`StillDetector` confirms one (2 of 3 cascades find it
            again, upright, at 32 px): on the clip turned by 20 degrees the turned searches alone
            also found a neck, where the turned frame's filled corners made a face-like pattern.
            On the clip turned by 20, -20 and 12 degrees, 20 found the face in 440, 455 and 472
            of 472 frames, against 299, 274 and 420 upright only; the clip itself and the
            face-free clip were unchanged (472 of 472, and no face).
    """

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        detect_width: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 40,
        near_scale_factor: float = 1.2,
        tilt_deg: float = 20.0,
    ) -> None:
        cascade_path = Path(cascade_path) if cascade_path is not None else shipped_cascade(DEFAULT_CASCADE)
        if scale_factor <= 1.0 or near_scale_factor <= 1.0:
            raise ValueError(f"scale factors must be > 1, got {scale_factor} and {near_scale_factor}")
        if min_neighbors < 0 or min_size < 1 or detect_width < 0 or not 0 <= tilt_deg <= 45:
            raise ValueError("min neighbours must be >= 0, min size >= 1, detect width >= 0 and tilt_deg in [0, 45]")
        self.cascade = read_cascade(cascade_path)
        self.cascade_path = str(cascade_path)
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.near_scale_factor = near_scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.tilt_deg = float(tilt_deg)
        self._confirm: StillDetector | None = None  # confirms turned faces; made when first needed

    def clone(self) -> HaarDetector:
        """A detector with the same settings and its own cascades (one cascade must not serve two threads)."""
        twin = HaarDetector.__new__(HaarDetector)
        twin.__dict__.update(self.__dict__)
        twin.cascade = cv2.CascadeClassifier(self.cascade_path)
        twin._confirm = None
        return twin

    @property
    def angles(self) -> tuple[float, ...]:
        """The angles (degrees) the turned searches turn the frame by: ``-tilt_deg`` and ``+tilt_deg``."""
        return (-self.tilt_deg, self.tilt_deg) if self.tilt_deg else ()

    def detect(self, frame: np.ndarray) -> Faces:
        """Find faces in a frame (grayscale, BGR or BGRA)."""
        return self.detect_gray(to_gray(frame))

    def detect_gray(self, gray: np.ndarray, angles: tuple[float, ...] | None = None) -> Faces:
        """Find faces in a 2-D grayscale frame, upright and turned by each of ``angles`` (default:
        the detector's ``angles``)."""
        angles = self.angles if angles is None else angles
        h, w = gray.shape[:2]
        scale = 1.0
        if self.detect_width and w > self.detect_width:
            scale = self.detect_width / w
            small = cv2.resize(gray, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        else:
            small = gray
        side = max(1, round(self.min_size * scale))
        if min(small.shape[:2]) < side:
            return Faces.empty()
        xyxy = self._find(small, 0.0, (side, None), self.scale_factor) / scale
        if angles:  # a turned face counts where no upright one, nor another turned one, is
            turned = np.concatenate([self._confirmed(gray, self._find(small, angle, (side, None), TURNED_SF)
                                                     / scale, angle) for angle in angles])
            turned = turned[_suppress(turned, 0.3)]
            xyxy = np.concatenate([xyxy, turned[~_overlapping(turned, xyxy, 0.3).any(axis=1)]])
        if not len(xyxy):
            return Faces.empty()
        return Faces(clip_xyxy(np.round(xyxy), (w, h)))

    def _confirmed(self, gray: np.ndarray, xyxy: np.ndarray, angle: float) -> np.ndarray:
        """The boxes (of ``gray``) of faces found turned by ``angle`` that the confirming cascades
        find again, upright (:meth:`StillDetector.confirm_rank`)."""
        if self._confirm is None:
            self._confirm = StillDetector(profile_neighbors=0, edge_pad=0.0)
        keep = [self._confirm.confirm_rank(gray, _Candidate((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, angle, 0))
                is not None for x1, y1, x2, y2 in xyxy]
        return xyxy[np.asarray(keep, dtype=bool)].reshape(-1, 4)

    def _find(self, img: np.ndarray, angle: float, size: tuple[int, int | None], scale_factor: float) -> np.ndarray:
        """The cascade's faces in ``img`` turned by ``angle`` degrees, as ``(n, 4)`` boxes of ``img``:
        a face found turned is the upright square of its side around its centre. ``size`` is
        the smallest and largest face side (None: no largest)."""
        back = None
        if angle:
            img, back = _rotate(img, angle)
        lo, hi = size
        hits = self.cascade.detectMultiScale(img, scaleFactor=scale_factor, minNeighbors=self.min_neighbors,
                                             minSize=(lo, lo), maxSize=(hi, hi) if hi else (0, 0))
        hits = np.asarray(hits, dtype=np.float64).reshape(-1, 4)
        centres, half = hits[:, :2] + hits[:, 2:] / 2, hits[:, 2:] / 2
        if back is not None:
            centres = centres @ back[:, :2].T + back[:, 2]
        return np.concatenate([centres - half, centres + half], axis=1)

    def detect_near(self, gray: np.ndarray, xyxy: np.ndarray, grow: float = 0.5, face_px: int = 48,
                    scale_factor: float | None = None) -> Faces:
        """Re-find known faces by searching only around each of their boxes.

        Each region is the box grown by ``grow`` of its side on every side, scaled so that the
        face is about ``face_px`` pixels, and searched for faces of 0.7x to 1.4x the box's size:
        a fraction of a full-frame search. A box whose face is not found is dropped, so the
        caller can tell a lost face and fall back to :meth:`detect_gray`.

        Args:
            gray: 2-D grayscale frame.
            xyxy: Boxes ``(n, 4)`` of the faces seen last.
            grow: Margin searched around each box, as a fraction of its side.
            face_px: Side, in pixels, to which each region's face is scaled.
            scale_factor: Pyramid step (default: ``near_scale_factor``).
        """
        h, w = gray.shape[:2]
        found_boxes = []
        for x1, y1, x2, y2 in np.asarray(xyxy, dtype=np.int64).reshape(-1, 4):
            side = int(max(x2 - x1, y2 - y1, 1))
            pad = int(grow * side)
            rx1, ry1, rx2, ry2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
            if rx2 - rx1 < 24 or ry2 - ry1 < 24:
                continue
            scale = min(1.0, face_px / side)
            region = gray[ry1:ry2, rx1:rx2]
            if scale < 1.0:
                size = (max(1, round((rx2 - rx1) * scale)), max(1, round((ry2 - ry1) * scale)))
                region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            lo = max(1, round(0.7 * side * scale), round(self.min_size * scale))
            hi = max(lo + 1, round(1.4 * side * scale))
            if min(region.shape[:2]) < lo:
                continue
            for angle in (0.0, *self.angles):  # turned only when the upright search lost it
                hits = self._find(region, angle, (lo, hi), scale_factor or self.near_scale_factor) / scale
                hits += [rx1, ry1, rx1, ry1]
                if angle:
                    hits = self._confirmed(gray, hits, angle)
                if len(hits):
                    break
            else:
                continue
            centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
            found_boxes.append(hits[np.argmin(np.abs((hits[:, :2] + hits[:, 2:]) / 2 - centre).sum(axis=1))])
        if not found_boxes:
            return Faces.empty()
        return Faces(clip_xyxy(np.round(np.asarray(found_boxes)), (w, h)))


class BackgroundSearch:
    """Whole-frame searches on a thread of their own, each collected on a fixed frame.

    The search of frame ``n`` runs beside the frames that follow and is handed back on frame
    ``due`` (waiting for it only if it is not finished by then), so the faces a run finds do
    not depend on how fast the machine is. The thread has its own cascade (:meth:`HaarDetector.clone`):
    OpenCV's cascade must not serve two threads at once.

    Args:
        detector: The detector whose settings the searches use.
    """

    def __init__(self, detector: HaarDetector) -> None:
        self._detector = detector.clone()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._job: _Job | None = None
        self._due = 0

    @property
    def pending(self) -> bool:
        """Whether a search was submitted and not yet collected."""
        return self._job is not None

    def submit(self, gray: np.ndarray, due: int, angles: tuple[float, ...] | None = None) -> None:
        """Start searching ``gray`` (copied) for faces, upright and turned by ``angles`` (default: the
        detector's); :meth:`collect` hands it back on frame ``due``."""
        if self._thread is None:
            from runtime.cli_support import NATIVE_THREAD_PREFIX

            self._thread = threading.Thread(target=self._work, name=f"{NATIVE_THREAD_PREFIX}search", daemon=True)
            self._thread.start()
        self._job = _Job(gray.copy(), angles)
        self._due = due
        self._jobs.put(self._job)

    def collect(self, frame: int) -> Faces | None:
        """The search's faces when ``frame`` is its due frame or later (waiting for it if needed), else None."""
        job = self._job
        if job is None or frame < self._due:
            return None
        job.done.wait()
        self._job = None
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def cancel(self) -> None:
        """Drop the search in progress: its faces are never handed back."""
        self._job = None

    def close(self) -> None:
        """Stop the thread (after the search in progress, if any)."""
        self._job = None
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.result = self._detector.detect_gray(job.gray, job.angles)
            except BaseException as exc:  # handed to the main thread by collect()
                job.result = exc
            job.done.set()


@dataclass
class _Job:
    gray: np.ndarray
    angles: tuple[float, ...] | None
    done: threading.Event = field(default_factory=threading.Event)
    result: Faces | BaseException | None = None


def merge_new_faces(current: Faces, found: Faces) -> Faces:
    """``current`` plus the faces of ``found`` that none of it covers.

    ``found`` comes from a search of an earlier frame, so a face already followed may have
    moved since: a found box is new only when it overlaps no current box (IoU < 0.2) and its
    centre lies inside none.
    """
    if not len(found):
        return current
    if not len(current):
        return found
    from runtime.tracker import iou_matrix

    cur = current.xyxy.astype(np.float64)
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
    inside = ((centres[:, None, 0] >= cur[None, :, 0]) & (centres[:, None, 0] < cur[None, :, 2])
              & (centres[:, None, 1] >= cur[None, :, 1]) & (centres[:, None, 1] < cur[None, :, 3]))
    new = (iou_matrix(found.xyxy, current.xyxy).max(axis=1) < 0.2) & ~inside.any(axis=1)
    if not new.any():
        return current
    return Faces(np.concatenate([current.xyxy, found.xyxy[new]]))


def dedupe(faces: Faces, iou: float = 0.5) -> Faces:
    """``faces`` without the boxes that overlap an earlier one by more than ``iou`` (two tracks
    that converged on one face)."""
    if len(faces) < 2:
        return faces
    from runtime.tracker import iou_matrix

    overlap = np.triu(iou_matrix(faces.xyxy, faces.xyxy), k=1)
    keep = ~(overlap > iou).any(axis=0)
    return faces if keep.all() else Faces(faces.xyxy[keep])


CASCADES = {  # the cascades a still search may use, by short name (all ship with opencv-python 4.x)
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
}
PROFILE_CASCADE = "haarcascade_profileface.xml"  # faces turned to one side (the mirrored photo gives the other)
PROFILE_CONFIRM_ZOOMS = (0.85, 1.0, 1.2)  # a profile face is confirmed at each of these multiples of its size
EYE_CASCADE = "haarcascade_eye.xml"  # the eye a turned face shows, for profile faces just under the confirmation bar
EYE_PX = 96  # face side, in pixels, at which that eye is sought (the cascade's window is 20 px: an eye of ~1/5 face)


@dataclass(frozen=True)
class _Candidate:
    """A proposed face: its centre and side in photo pixels, the in-plane angle of the search
    that found it (degrees, counter-clockwise), the proposing cascade's neighbour count, and for
    a turned face, the side it is turned to (``profile``: found by the profile cascade, on the
    mirrored photo when ``mirrored``)."""

    cx: float
    cy: float
    side: float
    angle: float
    strength: int
    profile: bool = False
    mirrored: bool = False

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The proposal's box, in photo pixels."""
        half = self.side / 2
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


class StillDetector:
    """A thorough face search for photos (no frame budget): propose, then confirm.

    1. **Propose**: the ``frontal`` cascades search the photo at up to ``max_side`` pixels (its
       longest side: larger photos are scaled down, smaller ones searched as they are), and the
       first of them also the photo rotated by each of ``angles`` (tilted heads) at up to
       ``rotated_side`` pixels. A proposal needs only ``propose_neighbors`` overlapping hits.
       The profile cascade searches the photo and its mirror (faces turned either way) at up to
       ``profile_side`` pixels; its proposals need ``profile_neighbors`` hits. Large faces cut
       by the photo's edge (close-ups), which no cascade window fits, are proposed by a search of
       the photo with its edge pixels repeated around it (``edge_pad``).
    2. **Confirm**: each proposal is cut out upright (its rotation undone), scaled so that its
       face is ``confirm_px`` pixels, and searched again, around its own size only, by each
       ``confirm`` cascade; it is a face when at least ``min_votes`` of them find it there with
       ``confirm_neighbors`` hits each. The cascades err on different textures, so agreement
       removes most false faces, and this second look costs a fraction of a whole-photo search.
       There is only one profile cascade, so a profile proposal is confirmed by its own cascade
       finding it again with ``profile_confirm_neighbors`` hits at each of three sizes
       (:data:`PROFILE_CONFIRM_ZOOMS` times ``profile_confirm_px``), and only where no confirmed
       frontal face covers it (there it would lose the merge anyway). A profile proposal short of
       that bar, with at least ``profile_eye_floor`` hits at each size, is a face when OpenCV's eye
       cascade finds an eye in the upper half of it with ``profile_eye_neighbors`` hits.
    3. **Merge**: confirmed faces that overlap (IoU > ``nms_iou``, or one's centre inside the
       other) are one face: the one with the most votes, then the strongest proposal, stays; a
       profile face ranks below every frontal one.

    Measured on the media photos, skimage's astronaut, clip frames and transformed copies (rotated
    by 20 degrees, close-ups, upscaled, small faces in a 4000-pixel canvas) against 158 face-free
    images (no_face.mp4, skimage's photos and their rotations, lfw_subset's non-faces, face-free
    parts of the photos): 52 of 59 faces against 40 of 59 for :class:`HaarDetector` at width 320,
    false faces 2 (the heads on skimage's Greek coins) against 4. Left out as it did not help
    there: ``alt2`` as a second proposer (one more face for a third more time). The profile path
    came later, for faces turned too far for the frontal cascades (a 45-degree posed face, and 4
    more of 576 faces of a synthetic set), with no false face more on 49 face-free images and
    on the synthetic set's 300; it costs 0.1-0.3 s more a photo (1.2-1.8x the time).

    Args:
        max_side: Longest side, in pixels, of the photo the frontal cascades search. 2000: a face
            of 1.2 % of a 4000-pixel photo's width (48 pixels, 24 when searched) can still be
            found. Of the 7 small faces of a 4000-pixel canvas, 1280 found 3, 1600 found 5 and 2000
            found 6, with no false face more; a 4000-pixel photo then takes 0.9 s instead of 0.6.
        rotated_side: Longest side of the rotated searches (800: cheaper; tilted faces are
            seldom tiny).
        min_size: Smallest face side, in photo pixels (the cascade's own window, 24 pixels of
            the searched image, is the other bound). 32: against 24, the same faces of the set
            above and of a 300-image synthetic set (``runtime-eval``), and 10 false faces on that
            set instead of 18 (most were 25-32 pixel boxes on background texture).
        scale_factor: Pyramid step of the whole-photo searches.
        propose_neighbors: Overlapping hits a proposal needs (2: low, confirmation judges it).
        frontal: Cascades (:data:`CASCADES` names) that propose faces upright.
        angles: In-plane rotations (degrees) also searched, by the first ``frontal`` cascade
            (±20: they found 10 more of the 59 faces above, most of them on the copies rotated
            by 20 degrees, for about a third more time).
        confirm: Cascades that confirm a proposal.
        min_votes: Confirming cascades that must find the face (2 of 3: one alone let through
            false faces on textures, all three lost faces).
        confirm_neighbors: Hits each confirming cascade needs (3; 5 lost Grace Hopper's face).
        confirm_px: Face side, in pixels, at which proposals are confirmed (32: at 56 the
            cascades confirmed many textures, at 32 to 40 few).
        confirm_scale_factor: Pyramid step of the confirming searches.
        nms_iou: Overlap above which two confirmed faces are one.
        profile_side: Longest side of the profile searches (640: the same faces as 800 and 1000 on
            the sets above, for less time).
        profile_scale_factor: Pyramid step of the profile searches (1.2 found 2 fewer synthetic
            faces for about 15 % less time).
        profile_neighbors: Overlapping hits a profile proposal needs (8; 0: no profile search).
        profile_confirm_px: Face side, in pixels, at which profile proposals are confirmed.
        profile_confirm_neighbors: Hits the profile cascade needs at each confirming size (16:
            at its weakest size the 45-degree face had 32, a hand over a forehead 7-12, with the
            proposal's box; at 8 or 12 that hand was a face).
        profile_eye_floor: Hits at each confirming size a profile proposal under the bar needs for
            the eye check (4).
        profile_eye_neighbors: Hits of the eye cascade that confirm such a proposal (8; 0: no eye
            check). Turned faces under the bar showed an eye with 10-68 hits (2 real ones, 6 of a
            synthetic set), while no profile proposal on 242 face-free images, even at 3 proposal
            hits, showed more than 3, and the hand over a forehead none.
        edge_pad: Share of the photo's shorter side added around it, its edge pixels repeated, for
            the search of faces cut by the edge (0: no such search). 0.3: on 240 close-ups of 30
            labelled faces, each cut by one edge through 15 or 30 % of the face, 172 found
            against 101 without it; no false face more on 49 face-free images or a 300-image
            synthetic set; about 3 % more time a photo.
        edge_side: Longest side, in pixels, of the padded photo that search scales down to (480:
            the faces it looks for are large).
        edge_min_face: Smallest face it looks for, as a share of the photo's shorter side (0.2:
            close-ups; smaller faces cut by the edge are mostly hidden).
        second_px: Face side, in pixels, of the second look at a frontal proposal that too few
            cascades confirmed at ``confirm_px`` (48: small tilted faces are found more surely
            there; one at a lectern had 0-3 hits a cascade at 32 pixels and 8-12 at 48).
        second_neighbors: Hits every confirming cascade needs in that second look (8; 0: no
            second look). On the synthetic set for choosing (seed 1), 8 found 318 of 576 faces
            against 311 without it, with no false face more there or on 49 face-free images; 6
            found 323 but made a false face on the face-free images and 3 on the set; 4, 349
            with 5 and 7 more.
    """

    def __init__(
        self,
        max_side: int = 2000,
        rotated_side: int = 800,
        min_size: int = 32,
        scale_factor: float = 1.1,
        propose_neighbors: int = 2,
        frontal: tuple[str, ...] = ("default",),
        angles: tuple[float, ...] = (-20.0, 20.0),
        confirm: tuple[str, ...] = ("default", "alt2", "alt"),
        min_votes: int = 2,
        confirm_neighbors: int = 3,
        confirm_px: int = 32,
        confirm_scale_factor: float = 1.1,
        nms_iou: float = 0.3,
        profile_side: int = 640,
        profile_scale_factor: float = 1.1,
        profile_neighbors: int = 8,
        profile_confirm_px: int = 48,
        profile_confirm_neighbors: int = 16,
        profile_eye_floor: int = 4,
        profile_eye_neighbors: int = 8,
        edge_pad: float = 0.3,
        edge_side: int = 480,
        edge_min_face: float = 0.2,
        second_px: int = 48,
        second_neighbors: int = 8,
    ) -> None:
        if min(max_side, rotated_side, profile_side) < 64 or min_size < 1 or min(confirm_px, profile_confirm_px) < 24:
            raise ValueError("max_side, rotated_side and profile_side must be >= 64, min_size >= 1, and confirm_px "
                             "and profile_confirm_px >= 24")
        if profile_neighbors < 0 or profile_confirm_neighbors < 1 or profile_eye_floor < 1 or profile_eye_neighbors < 0:
            raise ValueError("profile_neighbors must be >= 0 (0: no profile search), profile_confirm_neighbors and "
                             "profile_eye_floor >= 1, and profile_eye_neighbors >= 0 (0: no eye check)")
        if not 0.0 <= edge_pad <= 1.0 or edge_side < 64 or not 0.0 < edge_min_face <= 1.0:
            raise ValueError("edge_pad must be in [0, 1] (0: no edge search), edge_side >= 64 and edge_min_face "
                             "in (0, 1]")
        if second_px < 24 or second_neighbors < 0:
            raise ValueError("second_px must be >= 24 and second_neighbors >= 0 (0: no second look)")
        if min(scale_factor, profile_scale_factor) <= 1.0:
            raise ValueError(f"scale factors must be > 1, got {scale_factor} and {profile_scale_factor}")
        if not frontal or min_votes > len(confirm):
            raise ValueError("a still search needs a frontal cascade, and min_votes <= the confirming cascades")
        unknown = (set(frontal) | set(confirm)) - CASCADES.keys()
        if unknown:
            raise ValueError(f"unknown cascades {sorted(unknown)}: use {sorted(CASCADES)}")
        self.max_side = max_side
        self.rotated_side = rotated_side
        self.min_size = min_size
        self.scale_factor = scale_factor
        self.propose_neighbors = propose_neighbors
        self.frontal = tuple(frontal)
        self.angles = tuple(float(a) for a in angles)
        self.confirm = tuple(confirm)
        self.min_votes = min_votes
        self.confirm_neighbors = confirm_neighbors
        self.confirm_px = confirm_px
        self.confirm_scale_factor = confirm_scale_factor
        self.nms_iou = nms_iou
        self.profile_side = profile_side
        self.profile_scale_factor = profile_scale_factor
        self.profile_neighbors = profile_neighbors
        self.profile_confirm_px = profile_confirm_px
        self.profile_confirm_neighbors = profile_confirm_neighbors
        self.profile_eye_floor = profile_eye_floor
        self.profile_eye_neighbors = profile_eye_neighbors
        self.edge_pad = edge_pad
        self.edge_side = edge_side
        self.edge_min_face = edge_min_face
        self.second_px = second_px
        self.second_neighbors = second_neighbors
        names = set(self.frontal) | set(self.confirm)
        self._cascades = {name: read_cascade(shipped_cascade(CASCADES[name])) for name in names}
        self._profile = read_cascade(shipped_cascade(PROFILE_CASCADE)) if profile_neighbors else None
        self._eye = read_cascade(shipped_cascade(EYE_CASCADE)) if profile_neighbors and profile_eye_neighbors else None

    def detect(self, frame: np.ndarray) -> Faces:
        """Find faces in a photo (grayscale, BGR or BGRA)."""
        return self.detect_gray(to_gray(frame))

    def detect_gray(self, gray: np.ndarray) -> Faces:
        """Find faces in a 2-D grayscale photo."""
        h, w = gray.shape[:2]
        if min(h, w) < self.min_size:
            return Faces.empty()
        candidates = self.propose(gray)
        scored = [(rank, cand.strength, cand) for cand in candidates
                  if not cand.profile and (rank := self.confirm_rank(gray, cand)) is not None]
        frontal = np.array([c.xyxy for _, _, c in scored]).reshape(-1, 4)
        for cand in candidates:  # a profile face covered by a frontal one would lose the merge: not confirmed
            if (cand.profile and not _overlapping(np.array([cand.xyxy]), frontal, self.nms_iou).any()
                    and (rank := self.confirm_rank(gray, cand)) is not None):
                scored.append((rank, cand.strength, cand))
        if not scored:
            return Faces.empty()
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
        boxes = np.array([c.xyxy for _, _, c in scored])
        keep = _suppress(boxes, self.nms_iou)
        return Faces(clip_xyxy(np.round(boxes[keep]), (w, h)))

    def propose(self, gray: np.ndarray) -> list[_Candidate]:
        """Every proposal of the whole-photo searches (before confirmation)."""
        out: list[_Candidate] = []
        for name in self.frontal:
            out += self._search(gray, self._cascades[name], self.max_side)
        for angle in self.angles:
            out += self._search(gray, self._cascades[self.frontal[0]], self.rotated_side, angle=angle)
        if self._profile is not None:
            for mirrored in (False, True):
                out += self._search(gray, self._profile, self.profile_side, mirrored=mirrored, profile=True)
        if self.edge_pad:
            out += self._edge_search(gray)
        return out

    def _edge_search(self, gray: np.ndarray) -> list[_Candidate]:
        """Large faces cut by the photo's edge (close-ups): the first ``frontal`` cascade on the photo
        with ``edge_pad`` of its shorter side added around it (edge pixels repeated, as the
        confirming cut-outs do), at up to ``edge_side`` pixels, for faces of at least
        ``edge_min_face`` of the shorter side. Only faces that cross the edge, with their centre
        inside the photo, are kept: the other searches see the rest."""
        h, w = gray.shape[:2]
        pad = int(round(self.edge_pad * min(h, w)))
        padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = self._search(padded, self._cascades[self.frontal[0]], self.edge_side,
                             min_face=self.edge_min_face * min(h, w))
        out = []
        for cand in found:
            cx, cy, half = cand.cx - pad, cand.cy - pad, cand.side / 2
            inside = 0 <= cx < w and 0 <= cy < h
            crosses = min(cx, cy) < half or cx + half > w or cy + half > h
            if inside and crosses:
                out.append(replace(cand, cx=cx, cy=cy))
        return out

    def _search(self, gray: np.ndarray, cascade: cv2.CascadeClassifier, side: int, angle: float = 0.0,
                mirrored: bool = False, profile: bool = False, min_face: float | None = None) -> list[_Candidate]:
        """One cascade over the whole photo scaled to at most ``side`` pixels, rotated by ``angle``
        degrees or mirrored; hits mapped back to photo pixels. A ``profile`` search uses the
        profile settings (pyramid step, hits a proposal needs). ``min_face``: the smallest face
        sought, in photo pixels (default ``min_size``)."""
        h, w = gray.shape[:2]
        scale = min(1.0, side / max(h, w))
        img = gray
        if scale < 1.0:
            img = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if mirrored:
            img = np.ascontiguousarray(img[:, ::-1])
        back = None
        if angle:
            img, back = _rotate(img, angle)
        min_side = max(1, round((self.min_size if min_face is None else min_face) * scale))
        if min(img.shape[:2]) < min_side:
            return []
        found, neighbours = cascade.detectMultiScale2(
            img, scaleFactor=self.profile_scale_factor if profile else self.scale_factor,
            minNeighbors=self.profile_neighbors if profile else self.propose_neighbors, minSize=(min_side, min_side))
        out = []
        for (x, y, bw, bh), n in zip(np.asarray(found).reshape(-1, 4), np.asarray(neighbours).reshape(-1),
                                     strict=True):
            cx, cy = x + bw / 2, y + bh / 2
            if back is not None:
                cx, cy = back @ np.array([cx, cy, 1.0])
            if mirrored:
                cx = img.shape[1] - cx
            out.append(_Candidate(cx / scale, cy / scale, bw / scale, angle, int(n), profile, mirrored))
        return out

    def confirm_rank(self, gray: np.ndarray, cand: _Candidate) -> int | None:
        """None when a proposal is not confirmed as a face; else its rank in the merge (higher wins):
        a frontal face's votes, and 0 for a profile face, so that a turned face is one that no
        frontal face covers."""
        if cand.profile:
            return 0 if self._profile_confirmed(gray, cand) else None
        votes = self._votes(gray, cand)
        return votes if votes >= self.min_votes else None

    def _upright(self, gray: np.ndarray, cand: _Candidate, px: int) -> np.ndarray:
        """The proposal's face and some context (a cascade needs its outline), its rotation undone
        (mirrored back too, for a profile found on the mirrored photo), scaled so that the face is
        ``px`` pixels, on a ``1.8 * px`` square."""
        size = int(round(px * 1.8))
        zoom = px / cand.side
        m = cv2.getRotationMatrix2D((cand.cx, cand.cy), cand.angle, zoom)
        m[0, 2] += size / 2 - cand.cx
        m[1, 2] += size / 2 - cand.cy
        patch = cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(patch[:, ::-1]) if cand.mirrored else patch

    def _votes(self, gray: np.ndarray, cand: _Candidate) -> int:
        """How many confirming cascades find the proposal's face again, upright, at about its size;
        a proposal that falls short gets a second look at ``second_px``, where it counts as found by
        all of them only if each finds it with ``second_neighbors`` hits."""
        px = self.confirm_px
        patch = self._upright(gray, cand, px)
        votes = 0
        for i, name in enumerate(self.confirm):
            if votes >= self.min_votes or votes + len(self.confirm) - i < self.min_votes:
                break  # decided
            votes += _centre_hits(self._cascades[name], patch, px, self.confirm_scale_factor,
                                  self.confirm_neighbors) > 0
        if votes >= self.min_votes or not self.second_neighbors:
            return votes
        patch = self._upright(gray, cand, self.second_px)
        for name in self.confirm:
            if not _centre_hits(self._cascades[name], patch, self.second_px, self.confirm_scale_factor,
                                self.second_neighbors):
                return votes
        return len(self.confirm)

    def _profile_confirmed(self, gray: np.ndarray, cand: _Candidate) -> bool:
        """Whether the profile cascade finds a profile proposal again, around ``profile_confirm_px``,
        with at least ``profile_confirm_neighbors`` overlapping hits at its centre at each size; or
        with ``profile_eye_floor`` at each size and an eye where a turned face shows one."""
        bar = self.profile_confirm_neighbors
        floor = bar if self._eye is None else min(bar, self.profile_eye_floor)
        least = bar
        for px in (round(self.profile_confirm_px * k) for k in PROFILE_CONFIRM_ZOOMS):
            least = min(least, _centre_hits(self._profile, self._upright(gray, cand, px), px,
                                             self.confirm_scale_factor, 1))
            if least < floor:
                return False  # decided: neither the bar nor the eye check can confirm it
        return least >= bar or self._eye_hits(gray, cand) >= self.profile_eye_neighbors  # no eye check: floor = bar

    def _eye_hits(self, gray: np.ndarray, cand: _Candidate) -> int:
        """The most hits of the eye cascade on one eye in the upper half of the proposal's face
        (centre across the face, 0.1-0.6 of its height down), the face upright at :data:`EYE_PX`."""
        patch = self._upright(gray, cand, EYE_PX)
        hits, counts = self._eye.detectMultiScale2(patch, scaleFactor=1.05, minNeighbors=1, minSize=(12, 12),
                                                   maxSize=(EYE_PX // 2, EYE_PX // 2))
        if len(hits) == 0:
            return 0
        hits = np.asarray(hits, dtype=np.float64).reshape(-1, 4)
        x = hits[:, 0] + hits[:, 2] / 2 - (patch.shape[1] - EYE_PX) / 2  # eye centres, in face pixels
        y = hits[:, 1] + hits[:, 3] / 2 - (patch.shape[0] - EYE_PX) / 2
        upper = (x >= 0) & (x <= EYE_PX) & (y >= 0.1 * EYE_PX) & (y <= 0.6 * EYE_PX)
        return int(np.asarray(counts).reshape(-1)[upper].max()) if upper.any() else 0


def _centre_hits(cascade: cv2.CascadeClassifier, patch: np.ndarray, px: int, scale_factor: float,
                 neighbors: int) -> int:
    """The largest neighbour count of ``cascade``'s faces of 0.7-1.4 ``px`` in ``patch`` whose centre
    lies within a third of ``px`` of the patch's centre (0: none found there)."""
    lo, hi = round(0.7 * px), round(1.4 * px)
    hits, counts = cascade.detectMultiScale2(patch, scaleFactor=scale_factor, minNeighbors=neighbors,
                                             minSize=(lo, lo), maxSize=(hi, hi))
    if len(hits) == 0:
        return 0
    hits = np.asarray(hits, dtype=np.float64).reshape(-1, 4)
    centres = hits[:, :2] + hits[:, 2:] / 2
    near = np.abs(centres - patch.shape[0] / 2).max(axis=1) < px / 3
    return int(np.asarray(counts).reshape(-1)[near].max()) if near.any() else 0


def _rotate(img: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` rotated by ``angle`` degrees (counter-clockwise) on a canvas that holds all of it,
    and the 2x3 matrix that maps the rotated image's points back to ``img``'s."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * sin + w * cos)), int(round(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, cv2.invertAffineTransform(m)


def _overlapping(a: np.ndarray, b: np.ndarray, iou: float) -> np.ndarray:
    """``(len(a), len(b))``: whether boxes overlap by more than ``iou``, or either's centre lies inside the other."""
    from runtime.tracker import iou_matrix

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), bool)

    def inside(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # p's centres inside q's boxes
        c = (p[:, :2] + p[:, 2:]) / 2
        return ((c[:, None, 0] >= q[None, :, 0]) & (c[:, None, 0] <= q[None, :, 2])
                & (c[:, None, 1] >= q[None, :, 1]) & (c[:, None, 1] <= q[None, :, 3]))

    return (iou_matrix(a, b) > iou) | inside(a, b) | inside(b, a).T


def _suppress(xyxy: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression (boxes in priority order): a box
    goes when it overlaps a kept one by more than ``iou``, or either's centre lies inside the other."""
    overlap = _overlapping(xyxy, xyxy, iou)
    keep: list[int] = []
    for i in range(len(xyxy)):
        if not overlap[i, keep].any():
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)
