"""Corpus readers on tiny trees of empty files laid out as MEAD, RAVDESS and CREMA-D ship them."""

from pathlib import Path

import pytest

from evp_anim.data.manifest import read_manifest, write_manifest
from evp_anim.data.readers import (detect_corpus, read_corpus, read_cremad, read_mead, read_ravdess)
from evp_anim.errors import EvpError


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def by_id(rows):
    return {r.clip_id: r for r in rows}


# ------------------------------------------------------------------------------------------ MEAD

@pytest.fixture()
def mead(tmp_path):
    root = tmp_path / "MEAD"
    for spk in ("M003", "W009"):
        for emo, lvl in (("neutral", 1), ("angry", 1), ("angry", 3), ("contempt", 2)):
            for n in ("001", "002"):
                touch(root, f"{spk}/audio/{emo}/level_{lvl}/{n}.m4a", f"{spk}/video/front/{emo}/level_{lvl}/{n}.mp4")
    touch(root, "M003/audio/happy/level_2/003.m4a")          # audio only
    touch(root, "M003/video/left_30/happy/level_2/003.mp4")   # another camera: ignored
    touch(root, "M003/audio/joyful/level_1/001.m4a")          # unknown emotion
    touch(root, "M003/audio/happy/level_4/001.m4a")           # unknown level
    touch(root, "M003/audio/happy/level_1/notes.txt")         # not a clip
    touch(root, "W009/audio.tar")                             # still packed (W009/audio exists though)
    touch(root, "W011/video.tar")                             # still packed, nothing extracted
    return root


def test_mead_rows(mead):
    scan = read_mead(mead)
    rows = by_id(scan.rows)
    assert len(rows) == 2 * 4 * 2 + 1
    r = rows["mead_M003_angry_l3_002"]
    assert (r.speaker, r.sentence_id, r.emotion, r.level, r.corpus) == ("M003", "002", "angry", 3, "mead")
    assert r.intensity == pytest.approx(1.0)
    assert r.audio == "M003/audio/angry/level_3/002.m4a"
    assert r.video == "M003/video/front/angry/level_3/002.mp4"
    assert r.track == "" and r.split == "train"
    assert rows["mead_W009_contempt_l2_001"].intensity == pytest.approx(2 / 3)
    assert rows["mead_W009_neutral_l1_001"].level == 1
    solo = rows["mead_M003_happy_l2_003"]
    assert solo.audio.endswith("003.m4a") and solo.video == ""


def test_mead_reports_what_it_skips(mead):
    skipped = dict(read_mead(mead).skipped)
    assert "unknown emotion" in skipped["M003/audio/joyful/level_1/001.m4a"]
    assert "level" in skipped["M003/audio/happy/level_4/001.m4a"]
    assert "not a MEAD audio clip" in skipped["M003/audio/happy/level_1/notes.txt"]
    assert "tar -xf video.tar" in skipped["W011/video.tar"]
    assert "W009/audio.tar" not in skipped
    assert not any("left_30" in p for p in skipped)


def test_mead_splits_hold_out_speakers_and_sentences(mead):
    rows = read_mead(mead, test_speakers=["W009"], test_sentences=["2"]).rows
    for r in rows:
        assert r.split == {(False, False): "train", (True, False): "test_speaker",
                           (False, True): "test_sentence", (True, True): "test_both"}[
            (r.speaker == "W009", r.sentence_id == "002")]
    assert {r.split for r in rows} == {"train", "test_speaker", "test_sentence", "test_both"}


def test_unknown_held_out_speaker_is_an_error(mead):
    with pytest.raises(EvpError, match="M999.*M003, W009"):
        read_mead(mead, test_speakers=["M999"])


# ------------------------------------------------------------------------------------------ RAVDESS

@pytest.fixture()
def ravdess(tmp_path):
    root = tmp_path / "RAVDESS"
    names = []
    for actor in ("01", "02"):
        for emo, inten in (("01", "01"), ("03", "01"), ("03", "02"), ("06", "02"), ("07", "01")):
            for stmt in ("01", "02"):
                names.append(f"Audio_Speech_Actors_01-24/Actor_{actor}/03-01-{emo}-{inten}-{stmt}-01-{actor}.wav")
    names += [
        "Video/Actor_01/01-01-03-01-01-01-01.mp4",   # audio-video of a clip that also has a .wav
        "Video/Actor_01/02-01-03-01-01-01-01.mp4",   # video-only twin
        "Video/Actor_01/02-01-08-02-02-02-01.mp4",   # video only, no audio anywhere
        "Video/Actor_01/01-01-05-02-02-01-01.mp4",   # audio-video only: audio from the mp4
        "Audio_Speech_Actors_01-24/Actor_01/03-01-02-01-01-01-01.wav",  # calm
        "Audio_Speech_Actors_01-24/Actor_02/03-01-02-02-02-02-02.wav",  # calm
        "Audio_Song_Actors_01-24/Actor_01/03-02-03-01-01-01-01.wav",    # song
        "Audio_Speech_Actors_01-24/Actor_01/03-01-09-01-01-01-01.wav",  # bad emotion code
        "Audio_Speech_Actors_01-24/Actor_01/readme.wav",                 # bad name
        "Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-02.wav",  # actor 02 in Actor_01
    ]
    touch(root, *names)
    return root


def test_ravdess_rows(ravdess):
    rows = by_id(read_ravdess(ravdess).rows)
    assert len(rows) == 2 * 5 * 2 + 2
    r = rows["ravdess_02_fear_i02_s02_r01"]
    assert (r.speaker, r.sentence_id, r.emotion, r.level, r.corpus) == ("Actor_02", "02", "fear", 3, "ravdess")
    assert r.text == "Dogs are sitting by the door"
    assert r.intensity == pytest.approx(1.0)
    assert rows["ravdess_01_happy_i01_s01_r01"].level == 2
    assert rows["ravdess_01_disgusted_i01_s01_r01"].emotion == "disgusted"
    assert rows["ravdess_01_neutral_i01_s02_r01"].level == 1
    assert rows["ravdess_01_neutral_i01_s02_r01"].intensity == pytest.approx(1 / 3)
    happy = rows["ravdess_01_happy_i01_s01_r01"]
    assert happy.audio == "Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-01.wav"
    assert happy.video == "Video/Actor_01/01-01-03-01-01-01-01.mp4"
    angry = rows["ravdess_01_angry_i02_s02_r01"]
    assert angry.audio == angry.video == "Video/Actor_01/01-01-05-02-02-01-01.mp4"
    surprised = rows["ravdess_01_surprised_i02_s02_r02"]
    assert surprised.audio == "" and surprised.video.startswith("Video/Actor_01/02-01-08")


def test_ravdess_skips_calm_and_song_and_reports_them(ravdess):
    skipped = dict(read_ravdess(ravdess).skipped)
    calm = [p for p, why in skipped.items() if "calm" in why]
    assert sorted(calm) == ["Audio_Speech_Actors_01-24/Actor_01/03-01-02-01-01-01-01.wav",
                            "Audio_Speech_Actors_01-24/Actor_02/03-01-02-02-02-02-02.wav"]
    assert "song" in skipped["Audio_Song_Actors_01-24/Actor_01/03-02-03-01-01-01-01.wav"]
    assert "emotion code 09" in skipped["Audio_Speech_Actors_01-24/Actor_01/03-01-09-01-01-01-01.wav"]
    assert "not a RAVDESS name" in skipped["Audio_Speech_Actors_01-24/Actor_01/readme.wav"]
    assert "differs from the folder" in skipped["Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-02.wav"]
    assert not any(r.emotion == "calm" for r in read_ravdess(ravdess).rows)


def test_ravdess_splits_accept_short_ids(ravdess):
    rows = read_ravdess(ravdess, test_speakers=["2"], test_sentences=["1"]).rows
    for r in rows:
        held_spk, held_sen = r.speaker == "Actor_02", r.sentence_id == "01"
        assert r.split == ("test_both" if held_spk and held_sen else "test_speaker" if held_spk
                           else "test_sentence" if held_sen else "train")


# ------------------------------------------------------------------------------------------ CREMA-D

@pytest.fixture()
def cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    touch(root, *[f"AudioWAV/{a}_{s}_{e}_{l}.wav" for a in ("1001", "1002") for s in ("DFA", "IEO")
                  for e, l in (("ANG", "HI"), ("ANG", "LO"), ("SAD", "MD"), ("HAP", "XX"), ("NEU", "XX"))])
    touch(root, "VideoFlash/1001_DFA_ANG_HI.flv",
          "AudioWAV/1001_DFA_BOR_XX.wav",      # unknown emotion
          "AudioWAV/1001_ZZZ_ANG_HI.wav",      # unknown sentence
          "AudioWAV/1001_DFA_ANG_VH.wav",      # unknown level
          "AudioWAV/notes.txt")
    return root


def test_cremad_rows(cremad):
    rows = by_id(read_cremad(cremad).rows)
    assert len(rows) == 2 * 2 * 5
    r = rows["cremad_1001_DFA_ANG_HI"]
    assert (r.speaker, r.sentence_id, r.emotion, r.level, r.corpus) == ("1001", "DFA", "angry", 3, "cremad")
    assert r.text == "Don't forget a jacket" and r.audio == "AudioWAV/1001_DFA_ANG_HI.wav"
    assert r.video == "VideoFlash/1001_DFA_ANG_HI.flv"
    assert rows["cremad_1002_IEO_ANG_LO"].level == 1
    assert rows["cremad_1002_IEO_SAD_MD"].level == 2
    assert rows["cremad_1002_IEO_HAP_XX"].level == 2          # unspecified → middle level
    assert rows["cremad_1002_IEO_NEU_XX"].level == 1          # neutral is level 1 as in MEAD
    assert rows["cremad_1002_IEO_HAP_XX"].video == ""


def test_cremad_reports_bad_names_and_splits(cremad):
    scan = read_cremad(cremad, test_speakers=["1002"], test_sentences=["ieo"])
    skipped = dict(scan.skipped)
    assert set(skipped) == {"AudioWAV/1001_DFA_BOR_XX.wav", "AudioWAV/1001_ZZZ_ANG_HI.wav",
                            "AudioWAV/1001_DFA_ANG_VH.wav", "AudioWAV/notes.txt"}
    assert "emotion" in skipped["AudioWAV/1001_DFA_BOR_XX.wav"]
    splits = {(r.speaker, r.sentence_id): r.split for r in scan.rows}
    assert splits == {("1001", "DFA"): "train", ("1001", "IEO"): "test_sentence",
                      ("1002", "DFA"): "test_speaker", ("1002", "IEO"): "test_both"}


# ------------------------------------------------------------------------------------------ detection

def test_detect_and_read_corpus(mead, ravdess, cremad):
    assert detect_corpus(mead) == "mead"
    assert detect_corpus(ravdess) == "ravdess"
    assert detect_corpus(cremad) == "cremad"
    assert read_corpus(cremad).rows == read_cremad(cremad).rows
    assert read_corpus(ravdess, kind="RAVDESS").rows == read_ravdess(ravdess).rows
    assert {r.corpus for r in read_corpus(mead).rows} == {"mead"}


def test_unknown_layout_and_kind(tmp_path):
    touch(tmp_path, "stuff/a.wav")
    with pytest.raises(EvpError, match="unknown corpus layout"):
        read_corpus(tmp_path)
    with pytest.raises(EvpError, match="unknown corpus kind"):
        read_corpus(tmp_path, kind="iemocap")
    with pytest.raises(EvpError, match="not found"):
        read_corpus(tmp_path / "missing")


def test_rows_round_trip_through_the_manifest(tmp_path, cremad):
    rows = read_cremad(cremad, test_speakers=["1001"]).rows
    write_manifest(tmp_path / "manifest.csv", rows)
    assert read_manifest(tmp_path / "manifest.csv") == rows
