"""The synthetic corpus: layout, manifest, splits, ground truth, determinism, resume."""

import json

import numpy as np
import pytest

from evp_anim.data.manifest import read_manifest
from evp_anim.errors import EvpError
from evp_anim.face.channels import RIG_CHANNELS
from evp_anim.synth.corpus import CorpusConfig, plan_jobs, synthesize_corpus
from evp_anim.tracks import load_track

SMALL = CorpusConfig(n_speakers=2, n_sentences=3, seed=5, emotions=("neutral", "happy", "sad"),
                     test_speakers=1, test_sentences=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sfm_dir):
    root = tmp_path_factory.mktemp("corpus") / "c"
    rows = synthesize_corpus(root, SMALL, sfm_dir, workers=2)
    return root, rows


def test_plan_counts_neutral_once_and_three_levels_otherwise():
    cfg = CorpusConfig(n_speakers=8, n_sentences=20)
    jobs = plan_jobs(cfg)
    assert len(jobs) == 8 * 20 * (1 + 7 * 3) == 3520
    assert {j.level for j in jobs if j.emotion == "neutral"} == {1}


def test_splits_hold_out_whole_speakers_and_whole_sentences():
    jobs = plan_jobs(CorpusConfig(n_speakers=8, n_sentences=20))
    train_spk = {j.speaker for j in jobs if j.split in ("train", "test_sentence")}
    test_spk = {j.speaker for j in jobs if j.split in ("test_speaker", "test_both")}
    train_sent = {j.sentence_id for j in jobs if j.split in ("train", "test_speaker")}
    test_sent = {j.sentence_id for j in jobs if j.split in ("test_sentence", "test_both")}
    assert not train_spk & test_spk and len(test_spk) == 2
    assert not train_sent & test_sent and len(test_sent) == 4
    assert {j.split for j in jobs} == {"train", "test_speaker", "test_sentence", "test_both"}


def test_corpus_has_mead_layout_and_a_valid_manifest(corpus):
    root, rows = corpus
    assert len(rows) == 2 * 3 * (1 + 2 * 3)
    manifest = read_manifest(root / "manifest.csv")
    assert [r.clip_id for r in manifest] == [r.clip_id for r in rows]
    r = next(r for r in manifest if r.emotion == "happy" and r.level == 2)
    assert r.audio == f"{r.speaker}/audio/happy/level_2/{r.sentence_id}.wav"
    assert (root / r.audio).is_file() and (root / r.track).is_file()
    assert r.intensity == pytest.approx(2 / 3)
    assert json.loads((root / "corpus.json").read_text())["seed"] == 5


def test_every_track_is_valid_and_matches_its_audio(corpus):
    from evp_anim.audio.io import load_audio
    root, rows = corpus
    for r in rows:
        tr = load_track(root / r.track)
        audio = load_audio(root / r.audio)
        assert tr.fps == 25.0 and tr.image_size == (256, 256)
        assert tr.n_frames == r.n_frames == int(np.ceil(len(audio) / 16000 * 25))
        assert tr.expression_names == list(RIG_CHANNELS)
        assert tr.landmarks_3d is not None and tr.identity.shape == (63,)
        assert tr.phonemes[-1][1] == pytest.approx(len(audio) / 16000, abs=0.05)
        # Landmarks sit inside the aligned crop.
        assert tr.landmarks_2d.min() > 0 and tr.landmarks_2d.max() < 256


def test_mouth_opens_during_speech_and_closes_in_silence(corpus):
    root, rows = corpus
    r = next(r for r in rows if r.emotion == "neutral")
    tr = load_track(root / r.track)
    jaw = tr.channel("jawOpen")
    t = (np.arange(tr.n_frames) + 0.5) / tr.fps
    lead_silence = tr.phonemes[0][1]
    assert tr.phonemes[0][2] == "_"
    assert jaw[t < lead_silence - 0.05].max() < 0.1
    assert jaw.max() > 0.3
    # Inner-lip gap (iBUG 63 vs 67, 0-based 62/66) follows the jaw channel, except where /p b m/
    # seal the lips against an open jaw (mouthClose); there the lips meet.
    from evp_anim.face.lip_contact import closure_curve, mouth_openness
    from evp_anim.synth.visemes import viseme_sequence
    closure = closure_curve([(s, e) for s, e, v in viseme_sequence(tr.phonemes) if v == "PP"],
                            tr.n_frames, tr.fps, approach=0.5)
    sealed = closure > 0
    assert (closure == 1.0).any()
    assert (np.abs(mouth_openness(tr.landmarks_3d[closure == 1.0]) + 0.005) < 0.002).all()
    gap = tr.landmarks_3d[:, 66, 1] - tr.landmarks_3d[:, 62, 1]
    assert np.corrcoef(np.abs(gap[~sealed]), jaw[~sealed])[0, 1] > 0.7


def test_emotion_is_in_the_expression_and_labels(corpus):
    root, rows = corpus
    by = {(r.speaker, r.sentence_id, r.emotion, r.level): r for r in rows}
    key = next(k for k in by if k[2] == "happy" and k[3] == 3)
    happy = load_track(root / by[key].track)
    neutral = load_track(root / by[(key[0], key[1], "neutral", 1)].track)
    assert happy.channel("sfm_happiness").mean() > 0.3
    assert neutral.channel("sfm_happiness").max() == 0.0
    assert happy.emotion[:, 5].min() == 1.0 and happy.intensity[0] == pytest.approx(1.0)
    # Mouth corners (iBUG 49, 55) sit higher (more negative y in image space) when happy.
    corner_y = lambda tr: tr.landmarks_3d[:, [48, 54], 1].mean()  # noqa: E731  (3D: y up)
    assert corner_y(happy) > corner_y(neutral) + 1.0


def test_generation_is_deterministic_and_resumes_after_a_kill(corpus, tmp_path, sfm_dir):
    root, rows = corpus
    victim = rows[4]
    original = load_track(root / victim.track)
    # Simulate a run killed before this clip was written: remove its track and re-run.
    (root / victim.track).unlink()
    again = synthesize_corpus(root, SMALL, sfm_dir, workers=1)
    assert [r.clip_id for r in again] == [r.clip_id for r in rows]
    remade = load_track(root / victim.track)
    for name, arr in original.arrays().items():
        np.testing.assert_array_equal(getattr(remade, name), arr)


def test_resume_with_other_settings_is_refused(corpus, sfm_dir):
    root, _ = corpus
    other = CorpusConfig(n_speakers=3, n_sentences=3, seed=5)
    with pytest.raises(EvpError, match="other settings"):
        synthesize_corpus(root, other, sfm_dir)


def test_bad_config_is_rejected_with_one_line():
    with pytest.raises(EvpError, match="--sentences"):
        CorpusConfig(n_sentences=10_000).validate()
    with pytest.raises(EvpError, match="unknown emotion"):
        CorpusConfig(emotions=("joyful",)).validate()


# ---------------------------------------------------------------------- rerun verifies what it reuses
TINY = CorpusConfig(n_speakers=1, n_sentences=2, seed=3, emotions=("neutral", "happy"),
                    test_speakers=0, test_sentences=1)


def _state(root, rows):
    """bytes and mtime of every clip file."""
    out = {}
    for r in rows:
        for rel in (r.audio, r.track):
            out[rel] = ((root / rel).read_bytes(), (root / rel).stat().st_mtime_ns)
    return out


def _same_track(a, b):
    ta, tb = load_track(a), load_track(b)
    for name, arr in ta.arrays().items():
        np.testing.assert_array_equal(getattr(tb, name), arr)
    assert ta.meta() == tb.meta()


def test_rerun_remakes_truncated_and_corrupted_files_and_reuses_the_rest(tmp_path, sfm_dir):
    # Issue 15 row 6: a rerun used to trust any existing track. Now each clip's files are checked
    # against the size + sha256 recorded when they were written.
    root = tmp_path / "c"
    rows = synthesize_corpus(root, TINY, sfm_dir, workers=1)
    assert len(rows) == 8
    log = [json.loads(line) for line in (root / "clips.jsonl").read_text().splitlines()]
    assert sorted(rec["clip"] for rec in log) == sorted(r.clip_id for r in rows)
    first = next(rec for rec in log if rec["clip"] == rows[0].clip_id)
    assert first["audio"]["size"] == (root / rows[0].audio).stat().st_size
    import hashlib
    assert first["track"]["sha256"] == hashlib.sha256((root / rows[0].track).read_bytes()).hexdigest()

    before = _state(root, rows)
    pristine = tmp_path / "pristine"
    for r in rows:
        for rel in (r.audio, r.track):
            (pristine / rel).parent.mkdir(parents=True, exist_ok=True)
            (pristine / rel).write_bytes(before[rel][0])

    truncated, corrupted = rows[1], rows[5]
    data = before[truncated.track][0]
    (root / truncated.track).write_bytes(data[: len(data) // 2])
    wav = bytearray(before[corrupted.audio][0])
    mid = len(wav) // 2
    wav[mid:mid + 64] = bytes(b ^ 0x5A for b in wav[mid:mid + 64])   # same size, other samples
    (root / corrupted.audio).write_bytes(bytes(wav))

    again = synthesize_corpus(root, TINY, sfm_dir, workers=1)
    assert again == sorted(rows, key=lambda r: r.clip_id)
    # The two damaged clips are remade exactly (generation is seeded; the wav byte for byte, the
    # track array for array: its zip stores write times).
    assert (root / corrupted.audio).read_bytes() == before[corrupted.audio][0]
    assert (root / truncated.audio).read_bytes() == before[truncated.audio][0]
    _same_track(pristine / truncated.track, root / truncated.track)
    _same_track(pristine / corrupted.track, root / corrupted.track)
    assert (root / truncated.track).stat().st_mtime_ns != before[truncated.track][1]
    assert (root / corrupted.audio).stat().st_mtime_ns != before[corrupted.audio][1]
    # Everything else is reused untouched.
    remade = {truncated.clip_id, corrupted.clip_id}
    after = _state(root, rows)
    for r in rows:
        if r.clip_id not in remade:
            for rel in (r.audio, r.track):
                assert after[rel] == before[rel], rel
    assert len((root / "clips.jsonl").read_text().splitlines()) == 8     # compacted

    # Without the log (a corpus from before it, or a run killed before it recorded a clip), a clip is
    # reused when its track validates and its wav has the sum the track's provenance recorded.
    (root / "clips.jsonl").unlink()
    victim = rows[6]
    wav = bytearray((root / victim.audio).read_bytes())
    wav[-100:] = bytes(b ^ 0xFF for b in wav[-100:])
    (root / victim.audio).write_bytes(bytes(wav))
    # A torn line, as a kill in the middle of an append leaves it, spoils nothing.
    (root / "clips.jsonl").write_text('{"clip": "S001_neutral_1_0')
    before = _state(root, rows)
    synthesize_corpus(root, TINY, sfm_dir, workers=1)
    after = _state(root, rows)
    assert (root / victim.audio).read_bytes() == (pristine / victim.audio).read_bytes()
    for r in rows:
        if r.clip_id != victim.clip_id:
            for rel in (r.audio, r.track):
                assert after[rel] == before[rel], rel
    log = [json.loads(line) for line in (root / "clips.jsonl").read_text().splitlines()]
    assert sorted(rec["clip"] for rec in log) == sorted(r.clip_id for r in rows)


def test_damaged_settings_file_is_one_line_error(tmp_path, sfm_dir):
    root = tmp_path / "c"
    root.mkdir()
    (root / "corpus.json").write_bytes(b"\x00{not json")
    with pytest.raises(EvpError, match="damaged") as err:
        synthesize_corpus(root, TINY, sfm_dir, workers=1)
    assert "\n" not in str(err.value)
