"""Training augmentation: one affine warp per face, on the host (numpy and OpenCV) or as a Keras layer.

Shift, rotation and zoom are composed into ONE warp, so a face is resampled once. Keras's
``RandomTranslation``, ``RandomRotation`` and ``RandomZoom`` in a row resample it three times, and
the bilinear blur adds up: a model trained that way sees softer faces than it is later given (a
train/serve mismatch). Measured on 2,048 training faces with shift and zoom 0.15 and 10 degrees:
the VGG trained on single warps was right on 74.3 % of its single-warp faces and on 68.3 % of the
three-layer ones (75.3 % unaugmented).

On TensorFlow the augmentation is Keras layers mapped over ``tf.data``
(:func:`trainer.train.make_dataset`): flip, :func:`random_affine_layer`, :func:`random_blur_layer`
and erasing. On JAX an affine transform inside the training step is a gather that XLA runs badly
on a GPU: measured on an H200, a step of the VGG at batch 128 took 9 ms without it and 640-780 ms
with it. There :class:`HostAugment` warps each face (flip included) with OpenCV on worker threads,
and blurs and erases in numpy, while the accelerator trains on the previous batch.

The two paths draw the same distributions: flip with chance 1/2, shift
uniform in +-``shift`` of the side, rotation uniform in +-``rotate_deg``, zoom uniform in
1 +- ``zoom``, edges filled by repeating the border pixels (Keras's ``nearest``), and erasing (Zhong
et al. 2020) of a rectangle of 2-33 % of the face, aspect ratio 0.3-3.3, filled with uniform noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ERASE_AREA = (0.02, 0.33)  # fraction of the face an erased rectangle covers
ERASE_ASPECT = (0.3, 1 / 0.3)  # height / width of an erased rectangle (drawn log-uniformly)
# Gaussian sigma, in pixels of the 48-px face, of a blurred face (drawn uniformly). Served crops are
# resampled from faces of any size: the crop of a face 24-40 px tall is an upscaled, soft image.
BLUR_SIGMA = (0.4, 1.2)
BLUR_RADIUS = 3  # taps on each side of the kernel's centre: 2.5 sigma at the largest sigma


@dataclass(frozen=True)
class HostAugment:
    """Random flip, shift, rotation, zoom and erasing of raw 0-255 faces.

    Attributes:
        shift: Max shift, fraction of the side.
        rotate_deg: Max rotation, degrees.
        zoom: Max zoom in or out, fraction.
        erase: Chance per face of random erasing.
        blur: Chance per face of a Gaussian blur (sigma drawn from ``BLUR_SIGMA``).
    """

    shift: float = 0.1
    rotate_deg: float = 10.0
    zoom: float = 0.1
    erase: float = 0.0
    blur: float = 0.0

    def __call__(self, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented float32 copies of ``faces`` (``(N, H, W, 1)``, any numeric type, 0-255)."""
        n, h, w = faces.shape[:3]
        out = np.empty((n, h, w, 1), np.float32)
        flips = rng.random(n) < 0.5
        shifts = rng.uniform(-self.shift, self.shift, (n, 2)) * (w, h)
        angles = rng.uniform(-self.rotate_deg, self.rotate_deg, n)
        scales = rng.uniform(1 - self.zoom, 1 + self.zoom, n)
        centre = ((w - 1) / 2, (h - 1) / 2)
        for i in range(n):
            face = np.ascontiguousarray(faces[i, :, :, 0], dtype=np.float32)
            if flips[i]:
                face = face[:, ::-1]
            matrix = cv2.getRotationMatrix2D(centre, float(angles[i]), float(scales[i]))
            matrix[:, 2] += shifts[i]
            out[i, :, :, 0] = cv2.warpAffine(
                face, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        if self.blur > 0:
            for i in np.flatnonzero(rng.random(n) < self.blur):
                out[i, :, :, 0] = gaussian_blur(out[i, :, :, 0], rng.uniform(*BLUR_SIGMA))
        if self.erase > 0:
            for i in np.flatnonzero(rng.random(n) < self.erase):
                self._erase(out[i, :, :, 0], rng)
        return out

    @staticmethod
    def _erase(face: np.ndarray, rng: np.random.Generator) -> None:
        """Blank one random rectangle of ``face`` (in place) with uniform noise."""
        h, w = face.shape
        for _ in range(10):  # a rectangle that does not fit is drawn again, as in the paper
            area = rng.uniform(*ERASE_AREA) * h * w
            aspect = math.exp(rng.uniform(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])))
            eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < eh < h and 0 < ew < w:
                top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                face[top : top + eh, left : left + ew] = rng.uniform(0, 255, (eh, ew))
                return


def face_batches(
    x: np.ndarray,
    y_onehot: np.ndarray,
    batch_size: int,
    seed: int,
    augment: HostAugment | None,
    sample_weight: np.ndarray | None = None,
    workers: int = 4,
    first_epoch: int = 0,
):
    """A ``keras.utils.PyDataset`` of shuffled, augmented training batches (threads, not processes).

    Each epoch reshuffles; batch ``i`` of epoch ``e`` is drawn from a generator seeded by
    ``(seed, e, i)``, so a run is repeatable whatever order the worker threads finish in, and a
    resumed run (``first_epoch``) sees the faces the uninterrupted one would have.
    """
    import keras

    class FaceBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
            self.epoch = first_epoch
            self.order = np.random.default_rng((seed, first_epoch)).permutation(len(x))

        def __len__(self) -> int:
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, i: int):
            index = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            rng = np.random.default_rng((seed, self.epoch, i))
            faces = augment(x[index], rng) if augment else x[index].astype(np.float32)
            if sample_weight is None:
                return faces, y_onehot[index]
            return faces, y_onehot[index], sample_weight[index]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng((seed, self.epoch)).permutation(len(x))

    return FaceBatches()


def inverse_affine_rows(
    size_wh: tuple[int, int], shift_xy: np.ndarray, angle_deg: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Rows ``[a0, a1, a2, b0, b1, b2, 0, 0]`` that map each OUTPUT pixel back to the input pixel it samples.

    The forward warp is :class:`HostAugment`'s: rotate by ``angle_deg`` and scale by ``scale``
    about the image centre, then shift by ``shift_xy`` pixels. Works on numpy arrays and on
    tensors of any Keras backend (only ``*``, ``+`` and ``keras.ops`` trigonometry are used).
    """
    import keras

    w, h = size_wh
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rad = angle_deg * (math.pi / 180)
    cos, sin = keras.ops.cos(rad) / scale, keras.ops.sin(rad) / scale
    ox, oy = cx + shift_xy[..., 0], cy + shift_xy[..., 1]  # where the centre lands
    zero = keras.ops.zeros_like(cos)
    # input = R(-angle) (output - centre - shift) / scale + centre
    return keras.ops.stack(
        [cos, -sin, cx - cos * ox + sin * oy, sin, cos, cy - sin * ox - cos * oy, zero, zero], axis=-1
    )


def random_affine_layer(shift: float, rotate_deg: float, zoom: float, seed: int | None = None):
    """A Keras layer that warps each face of a batch once: :class:`HostAugment`'s shift, rotation and zoom.

    Drawn as in :class:`HostAugment` (shift uniform in +-``shift`` of the side, rotation in
    +-``rotate_deg``, zoom in 1 +- ``zoom``), resampled bilinearly with the border pixels repeated.
    Float32 whatever the dtype policy. Identity outside training.
    """
    import keras

    def warp(images, seeds):
        n = keras.ops.shape(images)[0]
        h, w = images.shape[1], images.shape[2]
        side_wh = keras.ops.convert_to_tensor([w, h], "float32")
        shift_xy = keras.random.uniform((n, 2), -shift, shift, seed=seeds) * side_wh
        angle = keras.random.uniform((n,), -rotate_deg, rotate_deg, seed=seeds)
        scale = keras.random.uniform((n,), 1 - zoom, 1 + zoom, seed=seeds)
        rows = inverse_affine_rows((w, h), shift_xy, angle, scale)
        return keras.ops.image.affine_transform(images, rows, interpolation="bilinear", fill_mode="nearest")

    return _random_layer("random_affine", seed, warp)


def gaussian_taps(sigma, ops=np):
    """Normalised 1-D Gaussian kernels of ``2 * BLUR_RADIUS + 1`` taps, one per sigma.

    ``ops`` is ``numpy`` (a float or an array of sigmas; no framework call per face on the host) or
    ``keras.ops`` (a tensor of sigmas). A sigma of 0 gives the identity kernel (a single 1 at the centre).
    """
    offsets = ops.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype="float32")
    sigma = ops.expand_dims(ops.maximum(sigma, 1e-3), -1)
    weights = ops.exp(-0.5 * ops.square(offsets / sigma))
    return weights / ops.sum(weights, axis=-1, keepdims=True)


def gaussian_blur(face: np.ndarray, sigma: float) -> np.ndarray:
    """``face`` (2-D float32) blurred with :func:`gaussian_taps`' kernel, borders mirrored (OpenCV's
    default, and the Keras layer's ``reflect`` padding)."""
    taps = gaussian_taps(np.float32(sigma)).astype(np.float32).reshape(-1)
    return cv2.sepFilter2D(face, -1, taps, taps, borderType=cv2.BORDER_REFLECT_101)


def random_blur_layer(chance: float, seed: int | None = None):
    """A Keras layer that blurs each face of a batch with chance ``chance``, as :class:`HostAugment` does.

    Each blurred face gets its own sigma (``BLUR_SIGMA``). The batch becomes the channels of one
    image, so a single separable depthwise convolution blurs every face with its own kernel.
    Float32 whatever the dtype policy. Identity outside training.
    """
    import keras

    def blur(images, seeds):
        n = keras.ops.shape(images)[0]
        chosen = keras.random.uniform((n,), seed=seeds) < chance
        sigma = keras.random.uniform((n,), *BLUR_SIGMA, seed=seeds)
        taps = keras.ops.transpose(gaussian_taps(keras.ops.where(chosen, sigma, 0.0), keras.ops))  # (taps, n)
        r = BLUR_RADIUS
        planes = keras.ops.transpose(images, (3, 1, 2, 0))  # (1, H, W, n): one channel per face
        planes = keras.ops.pad(planes, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
        planes = keras.ops.depthwise_conv(planes, keras.ops.reshape(taps, (2 * r + 1, 1, n, 1)), padding="valid")
        planes = keras.ops.depthwise_conv(planes, keras.ops.reshape(taps, (1, 2 * r + 1, n, 1)), padding="valid")
        return keras.ops.transpose(planes, (3, 1, 2, 0))

    return _random_layer("random_blur", seed, blur)


def _random_layer(name: str, seed: int | None, augment):
    """A float32 Keras layer: ``augment(images, seed_generator)`` in training, the identity otherwise."""
    import keras

    class RandomFaces(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__(dtype="float32", name=name)  # whatever the dtype policy: pixels stay float32
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training: bool = True):
            return augment(images, self.seed_generator) if training else images

        def compute_output_shape(self, input_shape):
            return input_shape

    return RandomFaces()
