"""The film-like synthetic clip (evp_anim.footage.film_clip): layout, cuts and exact ground truth."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from evp_anim.cli import main
from evp_anim.errors import EvpError
from evp_anim.footage.film_clip import (LEAD_LOOK, FilmClipConfig, load_film_truth, render_film_frames,
                                        save_film_truth)

# 320 x 240, shots of 1.6 s, 0.48 s and 0.48 s: the eyes shut 0.3-0.8 s, the turn 0.5-1.4 s
SMALL = dict(width=320, height=240, shot_frames=(40, 12, 12), lead_face_px=100.0,
             eyes_closed_at_s=0.3, eyes_closed_s=0.5, turn_at_s=0.5, turn_s=0.9)


@pytest.fixture(scope="module")
def film(sfm_dir):
    cfg = FilmClipConfig(**SMALL)
    gen = render_film_frames(cfg, sfm_dir)
    frames = []
    while True:
        try:
            frame, i = next(gen)
        except StopIteration as stop:
            truth = stop.value
            break
        assert i == len(frames)
        frames.append(frame)
    return cfg, np.stack(frames), truth


def _dlib():
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return (dlib, dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))


def _dlib_shape(models, frame, gt):
    """dlib's 68 points (68, 2) and shape object for the detected face nearest the truth ``gt``."""
    dlib, det, pred, _ = models
    rgb = np.ascontiguousarray(frame[..., ::-1])
    c = gt.mean(0)
    rects = [r for r in det(rgb, 1)
             if np.hypot((r.left() + r.right()) / 2 - c[0], (r.top() + r.bottom()) / 2 - c[1]) < 0.3 * np.ptp(gt[:, 0])]
    assert rects, "dlib found no face at the ground-truth position"
    shape = pred(rgb, rects[0])
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64), shape, rgb


def test_frames_have_the_configured_count_size_and_shots(film):
    cfg, frames, truth = film
    assert frames.shape == (64, 240, 320, 3) and frames.dtype == np.uint8
    assert truth.cuts == [40, 52] == cfg.cuts
    assert truth.lead.n_frames == 64 and truth.lead.image_size == (320, 240) and truth.lead.fps == 25.0
    assert truth.lead_present.tolist() == [True] * 40 + [False] * 12 + [True] * 12
    assert len(truth.others) == 1 and truth.others[0].shape == (64, 68, 2)


def test_cuts_change_the_picture_while_shots_are_continuous(film):
    _, frames, truth = film
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))   # diff[i]: i -> i+1
    at_cut = diff[[c - 1 for c in truth.cuts]]
    within = np.delete(diff, [c - 1 for c in truth.cuts])
    assert at_cut.min() > 15.0, at_cut
    assert within.max() < 6.0 and at_cut.min() > 4 * within.max(), (at_cut, within.max())


def test_lead_landmarks_lie_on_the_lead_as_dlib_finds_them(film):
    _, frames, truth = film
    lm = truth.lead.landmarks_2d
    # the nose tip is on the lead's skin in every frame she is in: her skin's chromaticity (the
    # Lambert shading scales all three channels alike), unlike the wall, her hair or the other's skin
    skin = np.array(LEAD_LOOK["skin"], np.float64)
    for i in np.flatnonzero(truth.lead_present):
        x, y = np.round(lm[i, 30]).astype(int)
        bgr = frames[i, y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
        assert bgr[2] > 60 and np.abs(bgr[:2] / bgr[2] - skin[:2] / skin[2]).max() < 0.06, (i, bgr)
    # dlib's points agree with the truth (its convention differs a little, the jawline most)
    models = _dlib()
    for i in (3, 16, 30, 38, 60):              # frontal, eyes shut, turning, after the turn, shot 3
        pts, _, _ = _dlib_shape(models, frames[i], lm[i])
        width = np.ptp(lm[i, :17, 0])
        assert np.median(np.linalg.norm(pts[17:] - lm[i, 17:], axis=1)) < 0.05 * width, i
    # where she is absent the track holds her nearest frame
    np.testing.assert_array_equal(lm[40:46], np.repeat(lm[39:40], 6, 0))
    np.testing.assert_array_equal(lm[46:52], np.repeat(lm[52:53], 6, 0))


def test_second_person_is_small_in_the_background_then_in_close_up(film):
    _, _, truth = film
    other, lead = truth.others[0], truth.lead.landmarks_2d
    present = ~np.isnan(other).any(axis=(1, 2))
    assert present.tolist() == [True] * 52 + [False] * 12 and np.isnan(other[52:]).all()
    jaw = lambda p: np.linalg.norm(p[:, 16] - p[:, 0], axis=1)    # noqa: E731
    ratio = np.median(jaw(other[:40]) / jaw(lead[:40]))
    assert 0.3 < ratio < 0.5, ratio
    # off to the side and clear of the lead in every frame of shot 1, turn included
    assert (other[:40, :, 0].min(1) > lead[:40, :, 0].max(1) + 10).all()
    assert (other[:52] >= 0).all() and (other[:52, :, 0] < 320).all() and (other[:52, :, 1] < 240).all()
    assert np.median(jaw(other[40:52])) > 2.5 * np.median(jaw(other[:40]))


def test_lead_shuts_her_eyes_for_half_a_second_and_turns_40_degrees(film):
    _, _, truth = film
    closed = np.flatnonzero(truth.eyes_closed)
    run = closed[closed < 40]
    assert len(run) == 13 and np.all(np.diff(run) == 1) and run[0] == 8      # 0.3-0.8 s at 25 fps
    lm = truth.lead.landmarks_2d
    # eye opening (upper to lower lid, both eyes) over eye width: near 0 when shut
    opening = (np.linalg.norm(lm[:, [37, 38, 43, 44]] - lm[:, [41, 40, 47, 46]], axis=2).mean(1)
               / np.linalg.norm(lm[:, 39] - lm[:, 36], axis=1))
    open_frames = np.setdiff1d(np.flatnonzero(truth.lead_present), np.flatnonzero(truth.eyes_closed))
    assert opening[run].max() < 0.5 * np.median(opening[open_frames])
    yaw = truth.lead_yaw_deg
    assert abs(np.abs(yaw).max() - 40.0) <= 2.0 and abs(yaw[np.argmax(np.abs(yaw))]) > 38
    assert 12 <= np.argmax(yaw) < 40 and abs(yaw[39]) < 10 and np.abs(yaw[52:]).max() < 15
    np.testing.assert_allclose(yaw, np.degrees(truth.lead.pose_rotation[:, 1]), atol=1e-4)


def test_the_two_people_differ_in_shape_and_to_dlibs_face_descriptor(film, sfm_dir):
    _, frames, truth = film
    models = _dlib()
    rec = models[3]

    def descriptor(i, gt):
        _, shape, rgb = _dlib_shape(models, frames[i], gt)
        return np.array(rec.compute_face_descriptor(rgb, shape))

    lead = truth.lead.landmarks_2d
    lead_a, lead_b = descriptor(2, lead[2]), descriptor(60, lead[60])      # shots 1 and 3
    other = descriptor(42, truth.others[0][42])                            # close-up, shot 2
    same = np.linalg.norm(lead_a - lead_b)
    diff = min(np.linalg.norm(lead_a - other), np.linalg.norm(lead_b - other))
    assert same < 0.4 and diff > 0.5 and diff > same + 0.2, (same, diff)
    # the identities (shape coefficients) differ as well
    assert np.linalg.norm(truth.lead.identity) > 1.0


def test_truth_round_trips_through_its_two_files(film, tmp_path):
    _, _, truth = film
    path = save_film_truth(truth, tmp_path / "clip.npz")
    assert (tmp_path / "clip_others.npz").is_file()
    back = load_film_truth(path)
    np.testing.assert_array_equal(back.lead_present, truth.lead_present)
    np.testing.assert_array_equal(back.eyes_closed, truth.eyes_closed)
    np.testing.assert_array_equal(back.lead.landmarks_2d, truth.lead.landmarks_2d)
    np.testing.assert_array_equal(back.others[0], truth.others[0])        # NaN where absent, too
    np.testing.assert_allclose(back.lead_yaw_deg, truth.lead_yaw_deg)
    ranges = back.lead.info["eyes_closed_ranges"]      # the held closure, then shot 3's blink
    assert back.cuts == truth.cuts and ranges[0] == [8, 21] and all(a >= 52 for a, _ in ranges[1:])
    assert back.lead.info["lead_present_ranges"] == [[0, 40], [52, 64]]


def test_cli_footage_synth_film_writes_the_clip_and_its_truth(tmp_path, sfm_dir):
    from evp_anim.video_io import probe_video

    out = tmp_path / "film.mp4"
    main(["-q", "footage-synth", "--film", "-o", str(out), "--width", "160", "--height", "128",
          "--face-px", "60", "--sfm-dir", str(sfm_dir)])
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"], round(info["fps"])) == (150, 160, 128, 25)
    truth = load_film_truth(tmp_path / "film.npz")
    assert truth.cuts == [80, 115] and truth.lead.info["video"] == "film.mp4"
    assert truth.lead_present.sum() == 115 and truth.eyes_closed.any()


def test_cli_film_refuses_options_it_does_not_take(tmp_path, capsys, sfm_dir):
    with pytest.raises(SystemExit) as e:
        main(["footage-synth", "--film", "--frames", "20", "-o", str(tmp_path / "f.mp4"), "--sfm-dir", str(sfm_dir)])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "--film" in err


@pytest.mark.parametrize("bad", [
    dict(width=321), dict(shot_frames=(40, 0, 10)), dict(shot_frames=(40, 10)), dict(lead_face_px=500.0),
    dict(background_ratio=0.9), dict(turn_deg=95.0), dict(shot_frames=(20, 10, 10)), dict(eyes_closed_s=0.0),
    dict(eyes_closed_s=float("nan")),
])
def test_bad_config_is_a_one_line_error(bad):
    with pytest.raises(EvpError) as e:
        FilmClipConfig(**bad).validate()
    assert "\n" not in str(e.value)
