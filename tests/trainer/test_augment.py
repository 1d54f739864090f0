"""Training augmentation on real faces: the host pipeline (JAX, PyTorch) and the Keras layers (TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.augment import HostAugment, face_batches, inverse_affine_rows
from trainer.config import FitConfig
from trainer.data import load_split


@pytest.fixture(scope="module")
def faces(fer_dir: Path) -> np.ndarray:
    return load_split(fer_dir, "test", limit_per_class=20, seed=0).x  # 140 real faces, uint8


def test_flip_alone_gives_each_face_or_its_mirror_about_half_each(faces: np.ndarray) -> None:
    out = HostAugment(shift=0, rotate_deg=0, zoom=0)(faces, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == faces.shape
    same = [np.array_equal(o, f) for o, f in zip(out, faces.astype(np.float32), strict=True)]
    mirrored = [np.array_equal(o, f[:, ::-1]) for o, f in zip(out, faces.astype(np.float32), strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0.35 < np.mean(mirrored) < 0.65


def test_warps_move_faces_within_range_and_repeat_with_the_seed(faces: np.ndarray) -> None:
    aug = HostAugment(shift=0.2, rotate_deg=10, zoom=0.2)
    out = aug(faces, np.random.default_rng(1))
    assert out.min() >= 0 and out.max() <= 255  # border repeated, linear interpolation: no overshoot
    diff = np.abs(out - faces.astype(np.float32)).mean(axis=(1, 2, 3))
    assert (diff > 1).mean() > 0.9  # nearly every face moved
    assert np.array_equal(out, aug(faces, np.random.default_rng(1)))
    assert not np.array_equal(out, aug(faces, np.random.default_rng(2)))


def test_erasing_blanks_one_rectangle_in_the_asked_share_of_faces(faces: np.ndarray) -> None:
    plain = HostAugment(shift=0, rotate_deg=0, zoom=0)(faces, np.random.default_rng(3))
    erased = HostAugment(shift=0, rotate_deg=0, zoom=0, erase=0.5)(faces, np.random.default_rng(3))
    changed = (plain != erased).reshape(len(faces), -1)
    share = changed.any(axis=1).mean()
    assert 0.35 < share < 0.65
    areas = changed.sum(axis=1)[changed.any(axis=1)] / (48 * 48)
    assert areas.max() <= 0.34 and np.median(areas) > 0.02


def test_batches_cover_every_face_once_per_epoch_and_reshuffle(faces: np.ndarray) -> None:
    y = np.eye(7, dtype=np.float32)[np.arange(len(faces)) % 7]
    weights = np.arange(len(faces), dtype=np.float32)
    batches = face_batches(faces, y, 32, seed=5, augment=None, sample_weight=weights, workers=1)
    assert len(batches) == 5  # 140 faces: 4 of 32 and one of 12
    seen = np.concatenate([batches[i][2] for i in range(len(batches))])
    assert sorted(seen.tolist()) == weights.tolist()  # each face once, its weight with it
    first = batches[0][2].copy()
    batches.on_epoch_end()
    assert not np.array_equal(first, batches[0][2])
    x0, y0, w0 = batches[0]
    assert x0.dtype == np.float32 and np.array_equal(y0, y[w0.astype(int)])


def _sharpness(faces: np.ndarray) -> float:
    """Mean absolute Laplacian: how much fine detail the faces keep."""
    return float(np.mean([np.abs(cv2.Laplacian(f[:, :, 0].astype(np.float32), cv2.CV_32F)).mean() for f in faces]))


def test_keras_warp_rows_sample_the_pixels_the_host_warp_does(faces: np.ndarray) -> None:
    import keras

    rng = np.random.default_rng(4)
    n = len(faces)
    shift_xy, angle, scale = rng.uniform(-7, 7, (n, 2)), rng.uniform(-10, 10, n), rng.uniform(0.85, 1.15, n)
    host = []
    for i in range(n):  # HostAugment's warp for these draws
        matrix = cv2.getRotationMatrix2D((23.5, 23.5), angle[i], scale[i])
        matrix[:, 2] += shift_xy[i]
        host.append(cv2.warpAffine(faces[i, :, :, 0].astype(np.float32), matrix, (48, 48),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    f32 = np.float32
    rows = inverse_affine_rows((48, 48), shift_xy.astype(f32), angle.astype(f32), scale.astype(f32))
    keras_out = keras.ops.convert_to_numpy(
        keras.ops.image.affine_transform(faces.astype(np.float32), rows, fill_mode="nearest")
    )
    diff = np.abs(keras_out[..., 0] - np.stack(host))
    assert diff.mean() < 0.5 and diff.max() < 8  # the same warp; OpenCV interpolates in fixed point


def test_tensorflow_augmentation_resamples_each_face_once(faces: np.ndarray) -> None:
    """Keras's translation, rotation and zoom layers in a row blurred faces to 0.61 of this sharpness."""
    import tensorflow as tf

    from trainer.train import make_augmenter

    cfg = FitConfig(data="unused", out="unused", shift=0.15, rotate_deg=10, zoom=0.15, seed=3)
    tf_out = make_augmenter(cfg)(tf.constant(faces.astype(np.float32)), training=True).numpy()
    host_out = HostAugment(cfg.shift, cfg.rotate_deg, cfg.zoom)(faces, np.random.default_rng(3))
    assert tf_out.shape == faces.shape and tf_out.min() >= 0 and tf_out.max() <= 255
    moved = np.abs(tf_out - faces.astype(np.float32)).mean(axis=(1, 2, 3))
    assert (moved > 1).mean() > 0.9  # nearly every face warped
    assert _sharpness(tf_out) > 0.9 * _sharpness(host_out)


def test_keras_blur_is_the_host_blur_at_some_sigma_of_the_range(faces: np.ndarray) -> None:
    import tensorflow as tf

    from trainer.augment import BLUR_SIGMA, gaussian_blur, random_blur_layer

    x = faces[:40].astype(np.float32)
    out = random_blur_layer(1.0, seed=5)(tf.constant(x), training=True).numpy()
    sigmas = np.linspace(*BLUR_SIGMA, 801)
    for face, blurred in zip(x[..., 0], out[..., 0], strict=True):
        diff = min((np.abs(gaussian_blur(face, s) - blurred) for s in sigmas), key=np.mean)
        assert diff.mean() < 0.1 and diff.max() < 1  # the same kernel and mirrored borders (sigma between grid points)
    assert _sharpness(out) < 0.7 * _sharpness(x)
    assert abs(out.mean() - x.mean()) < 0.5  # a normalised kernel keeps the brightness


@pytest.mark.parametrize("engine", ["host", "keras"])
def test_blur_softens_about_the_asked_share_of_faces(faces: np.ndarray, engine: str) -> None:
    x = faces.astype(np.float32)
    if engine == "host":
        out = HostAugment(shift=0, rotate_deg=0, zoom=0, blur=0.5)(faces, np.random.default_rng(6))
        mirrored = np.array([np.array_equal(o, f[:, ::-1]) for o, f in zip(out, x, strict=True)])
        x = np.where(mirrored[:, None, None, None], x[:, :, ::-1], x)  # the host pipeline also flips
    else:
        import tensorflow as tf

        from trainer.augment import random_blur_layer

        out = random_blur_layer(0.5, seed=6)(tf.constant(x), training=True).numpy()
    changed = np.abs(out - x).reshape(len(x), -1).max(axis=1) > 0.5
    assert 0.35 < changed.mean() < 0.65
    assert np.allclose(out[~changed], x[~changed], atol=1e-3)  # the others are left as they were
