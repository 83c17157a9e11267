"""The weight-free metrics on synthetic clips whose truth is known, and on real AnimateDiff GIFs when present."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from app.metrics import WEIGHT_FREE, FramesError, compute_weight_free, flow, iq, read_gif_frames, spec, stills
from app.metrics.frames import to_gray
from tests.app.metrics.synthetic import alternating, frozen, gif, moving_square, panning, texture

REAL_GIFS = Path(__file__).resolve().parents[4] / "shared" / "data" / "animatediff_gifs"


def _square_flow(k: int, clip: np.ndarray) -> float:
    """Mean flow magnitude inside the moving square (its inner part, away from the edges), over the frame pairs."""
    field = flow.flow_field(clip)
    magnitude = np.hypot(field.flows[..., 0], field.flows[..., 1]) * field.to_clip
    return float(np.mean([magnitude[t, 42:86, 8 + t * k + 4:8 + t * k + 44].mean() for t in range(len(magnitude))]))


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_a_square_moving_k_pixels_per_frame_gives_flow_near_k(k):
    clip = moving_square(k)
    assert _square_flow(k, clip) == pytest.approx(k, rel=0.1)
    moved = flow.motion(flow.flow_field(clip))
    # The square is a seventh of the picture: the 95th percentile is the square's speed, the mean much less.
    assert moved.high == pytest.approx(k, rel=0.1)
    assert moved.mean < 0.4 * k
    assert len(moved.mean_per_frame) == len(moved.high_per_frame) == len(clip) - 1


@pytest.mark.parametrize("k", [2, 4])
def test_a_pan_moves_every_pixel_by_k(k):
    moved = flow.motion(flow.flow_field(panning(k)))
    assert moved.mean == pytest.approx(k, rel=0.1)


def test_flow_is_reported_in_the_clips_own_pixels_when_computed_smaller():
    clip = moving_square(4, size=512, square=160)  # flow computed at 256 px, reported at 512 px
    field = flow.flow_field(clip)
    assert field.flows.shape[1:3] == (256, 256) and field.to_clip == pytest.approx(2.0)
    assert flow.motion(field).high == pytest.approx(4, rel=0.1)


def test_a_frozen_clip_has_no_motion_flicker_or_warping_error():
    measured = compute_weight_free(frozen(), names={"motion_mean", "motion_p95", "warp_error", "flicker"})
    for name in ("motion_mean", "motion_p95", "warp_error", "flicker"):
        assert measured.values[name].value == 0.0, name


def test_alternating_frames_flicker_far_more_than_a_moving_clip():
    flashing = stills.flicker(alternating())
    assert flashing.value == pytest.approx(1.0)  # every pixel jumps 0 <-> 255
    assert stills.flicker(moving_square(2)).value < 0.1
    assert stills.flicker(frozen()).value == 0.0
    # VBench's temporal flickering score is 1 - flicker: 0 for this clip, near 1 for steady ones.
    assert 1 - flashing.value == pytest.approx(0.0)


def test_warping_error_forgives_motion_but_not_change_the_flow_cannot_explain():
    smooth = flow.warping_error(flow.flow_field(panning(3)))
    boiling = np.stack([texture(128, seed=s) for s in range(8)])  # a new picture every frame
    random = flow.warping_error(flow.flow_field(boiling))
    assert smooth.error < 0.03
    assert random.error > 3 * smooth.error
    assert len(smooth.per_frame) == 7


def test_sharpness_falls_with_blur():
    import cv2

    sharp = np.repeat(texture(128, smooth=0.6)[None], 3, axis=0)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in sharp])
    assert stills.sharpness(to_gray(sharp)).value > 10 * stills.sharpness(to_gray(blurred)).value


def test_brisque_works_offline_and_scores_blur_worse(monkeypatch):
    problem = iq.brisque_problem()
    if problem:
        pytest.skip(problem)
    import cv2

    def no_network(*args, **kwargs):
        raise AssertionError("BRISQUE tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    frame = texture(256, smooth=1.0)
    blurred = cv2.GaussianBlur(frame, (0, 0), 4)
    assert iq.brisque_frame(blurred) > iq.brisque_frame(frame)
    value, per_frame = iq.brisque_clip(np.stack([frame] * 16))
    assert len(per_frame) == iq.BRISQUE_FRAMES and value == pytest.approx(per_frame[0])
    assert iq.sample_frames(16) == [0, 5, 10, 15]


def test_compute_weight_free_gives_every_metric_with_its_version():
    measured = compute_weight_free(moving_square(2, frames=6))
    expected = {m.name for m in WEIGHT_FREE}
    if iq.brisque_problem():
        expected.discard("brisque")
        assert "brisque" in measured.skipped
    assert set(measured.values) == expected
    for name, value in measured.values.items():
        assert value.version == spec(name).version
        assert value.per_frame and all(np.isfinite(value.per_frame))


def test_a_missing_iq_model_is_skipped_with_its_reason():
    measured = compute_weight_free(moving_square(2, frames=3), iq_problem=lambda: "no brisque here")
    assert measured.skipped == {"brisque": "no brisque here"} and "brisque" not in measured.values


def test_a_single_frame_has_no_motion_but_still_a_sharpness():
    measured = compute_weight_free(frozen(frames=1), names={"motion_mean", "flicker", "sharpness"})
    assert set(measured.values) == {"sharpness"}
    assert "motion_mean" in measured.skipped and "flicker" in measured.skipped


def test_gif_frames_round_trip_and_bad_files_are_refused():
    clip = moving_square(3, frames=4, size=64, square=24)
    frames = read_gif_frames(gif(clip))
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    with pytest.raises(FramesError):
        read_gif_frames(b"not a gif")


@pytest.mark.skipif(not REAL_GIFS.is_dir(), reason=f"the real AnimateDiff GIFs are not at {REAL_GIFS}")
def test_real_animatediff_gifs_pan_the_way_their_motion_lora_says():
    """AnimateDiff v2's MotionLoRA samples: the camera pans left or right, so the picture moves the other way."""
    def dx(name: str) -> float:
        return float(flow.flow_field(read_gif_frames(REAL_GIFS / name)).flows[..., 0].mean())

    assert dx("adiff_v2_motionlora_panleft.gif") > 1.0  # camera left: content moves right
    assert dx("adiff_v2_motionlora_panright.gif") < -1.0
    still = compute_weight_free(read_gif_frames(REAL_GIFS / "adiff_compare_mmv15_0.gif"), names={"motion_mean"})
    panned = compute_weight_free(read_gif_frames(REAL_GIFS / "adiff_v2_motionlora_panleft.gif"),
                                 names={"motion_mean"})
    assert panned.values["motion_mean"].value > 5 * still.values["motion_mean"].value


def test_our_mscn_is_the_packages():
    """iq._Brisque computes brisque's MSCN map with OpenCV instead of scipy: the same numbers."""
    if iq.brisque_problem():
        pytest.skip(iq.brisque_problem())
    from brisque import BRISQUE
    from skimage.color import rgb2gray

    gray = rgb2gray(texture(96, smooth=1.0))
    ours = iq._model().calculate_mscn_coefficients(gray, 7, 7 / 6)
    theirs = BRISQUE.calculate_mscn_coefficients(iq._model(), gray, 7, 7 / 6)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
