"""Identity-aware tracking of one person through a film-like clip with cuts (evp-anim track).

The clip (evp_anim.footage.film_clip): shot 1 the lead in front and a second person small and
soft in the background, the lead shuts her eyes and turns 40 degrees; cut; shot 2 the second
person in close-up, the lead absent; cut; shot 3 the lead again, framed otherwise.
"""

import json

import numpy as np
import pytest

from evp_anim.cli import main
from evp_anim.errors import EvpError
from evp_anim.footage.film_clip import FilmClipConfig, render_film_frames
from evp_anim.footage.tracking import TrackerOptions, parse_face_option, track_frames
from evp_anim.tracks import load_track
from evp_anim.video_io import open_video_writer

# 320 x 240 at 25 fps, shots of 40, 12 and 12 frames; eyes shut 0.3-0.8 s, the turn 0.5-1.4 s
SMALL = dict(width=320, height=240, shot_frames=(40, 12, 12), lead_face_px=100.0,
             eyes_closed_at_s=0.3, eyes_closed_s=0.5, turn_at_s=0.5, turn_s=0.9)


@pytest.fixture(scope="module")
def film(sfm_dir):
    gen = render_film_frames(FilmClipConfig(**SMALL), sfm_dir)
    frames = []
    while True:
        try:
            frames.append(next(gen)[0])
        except StopIteration as stop:
            return frames, stop.value


@pytest.fixture(scope="module")
def film_video(film, tmp_path_factory):
    frames, truth = film
    path = tmp_path_factory.mktemp("film") / "film.mp4"
    with open_video_writer(path, 25, (320, 240), crf=16) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope="module")
def tracked(film):
    return track_frames(film[0])


def _on_whom(landmarks, valid, truth):
    """Per frame: error (px, mean over 68 points) to the lead's truth and to the other person's."""
    lead = truth.lead.landmarks_2d
    other = truth.others[0]
    e_lead = np.linalg.norm(landmarks - lead, axis=2).mean(1)
    e_other = np.where(np.isnan(other).any((1, 2)), np.inf,
                       np.linalg.norm(np.nan_to_num(landmarks - other, nan=1e6), axis=2).mean(1))
    face_w = np.ptp(lead[:, :17, 0], axis=1)
    return e_lead, e_other, face_w


def test_cuts_are_found_exactly_and_the_lead_is_never_swapped_for_the_other(film, tracked):
    frames, truth = film
    res = tracked
    assert res.info["cuts"] == truth.cuts == [40, 52]
    e_lead, e_other, face_w = _on_whom(res.landmarks, res.valid, truth)
    v = res.valid
    wrong = v & ((e_other < e_lead) | (e_lead > 0.3 * face_w))
    assert not wrong.any(), np.flatnonzero(wrong)
    # every frame without the lead is flagged absent (shot 2 entirely) ...
    assert not (v & ~truth.lead_present).any()
    assert res.info["missing_ranges"][-1] == [40, 52] or [40, 52] in res.info["missing_ranges"]
    # ... and she is followed through her shut eyes and the 40-degree turn, and found again in shot 3
    assert v[truth.lead_present].mean() >= 0.95
    assert v[truth.eyes_closed].all() and v[np.abs(truth.lead_yaw_deg) > 30].all()
    med = float(np.median(e_lead[v]))
    assert med < 5.0, med  # px on a 100 px face (dlib's points lie a few px off the SFM vertices)
    shots = res.info["shots"]
    assert [(s["start"], s["stop"]) for s in shots] == [(0, 40), (40, 52), (52, 64)]
    assert shots[1]["face_frames"] == 0 and shots[1]["absent"] == [[40, 52]]
    assert res.info["target"]["faces_in_frame"] == 2 and res.info["target"]["frame"] == 0
    ident = res.info["identity"]
    assert ident["accepted_max"] <= 0.4 < ident["rejected_min"]


def test_absent_shot_holds_the_nearest_frames_and_nothing_is_smoothed_across_a_cut(tracked):
    lm = tracked.landmarks
    # shot 2 has no lead: its first half holds shot 1's last frame, its second half shot 3's first
    np.testing.assert_array_equal(lm[40:46], np.broadcast_to(lm[39], (6, 68, 2)))
    np.testing.assert_array_equal(lm[46:52], np.broadcast_to(lm[52], (6, 68, 2)))


def test_every_info_entry_is_explained_in_words(tracked):
    flags = tracked.info["flags"]
    for key in ("frames_without_face", "missing_ranges", "cuts", "shots", "jumps", "target", "identity"):
        assert key in tracked.info and len(flags[key]) > 40
    assert "untouched" in flags["missing_ranges"]
    json.dumps(tracked.info)  # stored in the track file as JSON


def test_face_1_follows_the_other_person_and_never_the_lead(film):
    frames, truth = film
    res = track_frames(frames, options=TrackerOptions(face_index=1))
    e_lead, e_other, _ = _on_whom(res.landmarks, res.valid, truth)
    v = res.valid
    assert not (v & (e_lead < e_other)).any()
    assert v[:40].mean() > 0.9 and not v[52:].any()   # shot 3 shows only the lead: absent
    assert "face 1 of 2" in res.info["target"]["chosen_by"]


def test_too_few_frames_with_the_face_names_the_shots(film):
    with pytest.raises(EvpError, match=r"shot 2 \(frames 40-51\): all 12 frames"):
        track_frames(film[0], options=TrackerOptions(max_missing=0.1))


def test_cli_track_by_box_writes_shots_and_flags(film_video, tmp_path, sfm_dir, capsys):
    out = tmp_path / "t.npz"
    # a box around the lead in frame 0 (she stands left of centre)
    main(["track", str(film_video), "-o", str(out), "--face", "40,60,200,240", "--sfm-dir", str(sfm_dir)])
    tr = load_track(out)
    assert tr.n_frames == 64 and tr.info["cuts"] == [40, 52]
    assert "--face 40,60,200,240" in tr.info["target"]["chosen_by"]
    assert tr.info["shots"][1]["face_frames"] == 0 and "flags" in tr.info
    line = capsys.readouterr()
    text = line.out + line.err
    assert "3 shots" in text and "shot 2 (frames 40-51): all 12 frames" in text
    main(["info", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert "untouched" in printed["info"]["flags"]["missing_ranges"]


@pytest.mark.parametrize("face, message", [
    ("2", r"first frame with faces \(frame 0\) shows 2 faces; --face must be 0\.\.1"),
    ("300,200,318,238", r"no face lies inside the --face box 300,200,318,238"),
    ("5000,10,5100,90", r"--face box 5000,10,5100,90 lies outside the 320x240 picture"),
    ("1,2", r"--face must be a face number"),
])
def test_cli_bad_face_choice_is_one_line_and_writes_nothing(film_video, tmp_path, sfm_dir, capsys, face, message):
    out = tmp_path / "t.npz"
    with pytest.raises(SystemExit) as ex:
        main(["track", str(film_video), "-o", str(out), "--face", face, "--sfm-dir", str(sfm_dir)])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    import re
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


def test_parse_face_option():
    assert parse_face_option("1") == (1, None)
    assert parse_face_option(" 120, 40,260,200 ") == (None, (120.0, 40.0, 260.0, 200.0))
    for bad in ("-1", "a", "1,2,3", "10,10,5,20", "1.5"):
        with pytest.raises(EvpError, match="--face"):
            parse_face_option(bad)


def test_a_clip_starting_on_the_last_frame_of_another_shot_chooses_after_the_cut(film):
    frames, truth = film
    # frame 0 is a leftover of shot 2 (the other person in close-up, the only face), then shot 1
    clip = [frames[45]] + frames[:24]
    res = track_frames(clip)
    assert res.info["cuts"] == [1]
    assert res.info["target"]["frame"] == 1 and "frames 0-0" in res.info["target"]["not_chosen_in"]
    assert not res.valid[0] and res.valid[1:].all()
    e_lead = np.linalg.norm(res.landmarks[1:] - truth.lead.landmarks_2d[:24], axis=2).mean(1)
    assert e_lead.max() < 0.3 * 100
