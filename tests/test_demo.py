"""The main job: `evp-anim demo` with the shipped weights on the bundled speech."""

import subprocess
import sys


from evp_anim.tracks import load_track
from evp_anim.video_io import probe_video


def test_demo_writes_tracks_previews_and_exports(tmp_path, sfm_dir):
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "evp_anim.cli", "--quiet", "demo", "-o", str(out), "--no-blender",
                        "--sfm-dir", str(sfm_dir)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    names = ("neutral", "happy", "sad", "angry", "surprised", "sad_to_happy")
    tracks = {n: load_track(out / f"{n}.npz") for n in names}
    for n, tr in tracks.items():
        assert probe_video(out / f"{n}.mp4")["frames"] == tr.n_frames
    happy, sad, neutral = tracks["happy"], tracks["sad"], tracks["neutral"]
    assert happy.emotion[:, 5].min() == 1.0 and sad.emotion[:, 6].min() == 1.0
    # The mouth moves with the speech: the jaw channel varies over the clip.
    assert neutral.channel("jawOpen").std() > 0.02
    # Emotion shows in the face: mouth corners (iBUG 49, 55) higher when happy than when sad (3D, y up).
    corners = lambda tr: tr.landmarks_3d[:, [48, 54], 1].mean()  # noqa: E731
    assert corners(happy) > corners(sad) + 0.5
    # The interpolation starts sad and ends happy.
    inter = tracks["sad_to_happy"]
    assert inter.emotion[0, 6] > 0.95 and inter.emotion[-1, 5] > 0.95
    assert (out / "happy.arkit.csv").is_file() and (out / "happy.livelink.csv").is_file()
    # The EMOTE take: rig coefficients with the happy emotion and a moving jaw, and its preview.
    emote = load_track(out / "emote_happy.npz")
    assert emote.n_frames == happy.n_frames
    assert probe_video(out / "emote_happy.mp4")["frames"] == emote.n_frames
    assert emote.emotion[:, 5].min() == 1.0
    assert emote.channel("jawOpen").std() > 0.02
    assert emote.channel("sfm_happiness").mean() > emote.channel("sfm_sadness").mean() + 0.2
