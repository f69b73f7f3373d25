"""Hearing a clip in a forked child while `animate` starts up (evp_anim/audio/hearing.py, issue 17):
the child's content, warnings and progress are those of the in-process front end, a child that
fails gives None (the caller then hears in-process), and the command's track is the in-process
function's. On ../shared/realspeech-dev (real voices)."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from evp_anim.audio.hearing import BackgroundHearing
from evp_anim.audio.io import load_audio
from evp_anim.audio.phones import pocketsphinx_available, speech_content

DEV = REPO.parent / "shared" / "realspeech-dev"
CLIP = DEV / "005.wav"        # "eight of spades four of clubs seven of hearts"

pytestmark = [pytest.mark.skipif(not pocketsphinx_available(), reason="pocketsphinx not installed"),
              pytest.mark.skipif(not CLIP.is_file(), reason="../shared/realspeech-dev missing")]


@pytest.mark.parametrize("recogniser", ["words", "phones"])
def test_child_hears_what_the_front_end_hears_in_process(recogniser):
    bg = BackgroundHearing.start(CLIP, None, recogniser)
    assert bg is not None                      # Linux: fork is available
    seen: list[float] = []
    content = bg.result(progress=seen.append)
    want = speech_content(load_audio(CLIP), None, recogniser=recogniser)
    assert content.source == want.source and content.phones == want.phones
    assert len(content.phones) > 10
    if recogniser == "words":
        assert seen and seen[-1] == 1.0        # the recogniser's progress came through
    assert not bg._proc.is_alive()


def test_warnings_of_a_mismatching_transcript_are_given_to_the_caller():
    wrong = "go forward ten meters"
    told: list[str] = []
    content = BackgroundHearing.start(CLIP, wrong, "words").result(warn=told.append)
    in_process: list[str] = []
    want = speech_content(load_audio(CLIP), wrong, warn=in_process.append, recogniser="words")
    assert told == in_process and "does not match the audio" in told[0]
    assert content.source == want.source == "words heard" and content.phones == want.phones


def test_a_child_that_fails_gives_none_and_no_warnings(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))       # not audio: load_audio raises
    told: list[str] = []
    assert BackgroundHearing.start(bad, None, "words").result(warn=told.append) is None
    assert told == []


def test_a_child_killed_midway_gives_none():
    bg = BackgroundHearing.start(CLIP, None, "words")
    bg._proc.kill()
    assert bg.result() is None


def test_animate_command_with_the_word_front_end_equals_the_in_process_track(tmp_path, sfm_dir):
    """The command hears in its child and streams the file; animate_speech_file hears in-process
    from the loaded samples: the same track."""
    out = tmp_path / "t.npz"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "--quiet", "animate", str(CLIP), "-o", str(out),
                        "-e", "happy", "-i", "0.7", "--sfm-dir", str(sfm_dir)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    from evp_anim.face.rig import FaceRig
    from evp_anim.living import LifeSettings
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model
    from evp_anim.tracks import load_track
    want = animate_speech_file(CLIP, load_animation_model(None), EmotionSpec("happy", 0.7), FaceRig(sfm_dir),
                               front_end="words", life=LifeSettings())
    got = load_track(out)
    assert got.info["front_end"] == want.info["front_end"] and "words heard" in got.info["front_end"]
    # The same phones give the same track up to float rounding (this process's torch may run on
    # another number of threads than the command's: a last-bit difference, ~1e-5 px); a phone
    # heard differently would move the mouth by millimetres.
    for name in ("landmarks_2d", "landmarks_3d", "expression", "pose_rotation", "gaze"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-3, err_msg=name)


def test_an_aligner_of_the_heard_words_gives_the_phones_of_the_whole_dictionary(monkeypatch):
    """recognize_words aligns with a decoder that knows only the words heard (alternates included,
    more added utterance by utterance): the phones are those of an aligner on all of CMUdict."""
    import evp_anim.audio.phones as phones
    audio = load_audio(CLIP)
    # short utterances: several, so later ones add words to the aligner the first one made
    heard = phones.recognize_words(audio, max_utterance_s=1.5)
    assert len(heard.utterances) >= 3 and len(heard.phones) > 20
    whole = phones._aligner(phones.require_pocketsphinx("test"))
    monkeypatch.setattr(phones, "_heard_aligner", lambda model, dec, words, aligner=None: whole)
    assert phones.recognize_words(audio, max_utterance_s=1.5).phones == heard.phones


def _record_workers(monkeypatch) -> list[int]:
    """The process ids of the word workers started from here on."""
    from evp_anim.forked import ForkedWorker
    pids: list[int] = []
    start = ForkedWorker.__init__

    def recording(self, *args, **kwargs):
        start(self, *args, **kwargs)
        pids.append(self.pid)
    monkeypatch.setattr(ForkedWorker, "__init__", recording)
    return pids


def _reaped(pid: int) -> bool:
    import os
    try:
        os.waitpid(pid, os.WNOHANG)      # still running, or a zombie nobody waited for
        return False
    except ChildProcessError:            # gone and waited for
        return True


def test_words_heard_in_two_processes_are_those_heard_in_one(monkeypatch):
    """The later half of the utterances is heard in a forked worker: same words, phones and
    utterances as one process; progress rises to 1; the worker is reaped."""
    import evp_anim.audio.phones as phones
    audio = load_audio(CLIP)
    one = phones.recognize_words(audio, max_utterance_s=1.5, workers=1)
    assert len(one.utterances) >= 3 and "spades" in one.text
    seen: list[float] = []
    import os
    parent, real_hear, here = os.getpid(), phones._hear, []
    workers = _record_workers(monkeypatch)

    def counted(*args, **kwargs):
        if os.getpid() == parent:
            here.append(args[-1])                       # the utterance's offset
        return real_hear(*args, **kwargs)
    monkeypatch.setattr(phones, "_hear", counted)
    two = phones.recognize_words(audio, max_utterance_s=1.5, workers=2, progress=seen.append)
    assert two == one
    assert 0 < len(here) < len(one.utterances)          # the worker heard the rest
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert len(workers) == 1 and _reaped(workers[0])


def test_a_word_worker_that_dies_leaves_its_utterances_to_the_parent(monkeypatch):
    """If the worker fails (here: on its first utterance), the parent hears its utterances
    itself: the result is still the one-process result."""
    import os
    import evp_anim.audio.phones as phones
    audio = load_audio(CLIP)
    one = phones.recognize_words(audio, max_utterance_s=1.5, workers=1)
    parent, real_hear = os.getpid(), phones._hear
    here = []

    def hear_or_die(*args, **kwargs):
        if os.getpid() != parent:
            raise MemoryError("the worker runs out of memory")
        here.append(args[-1])
        return real_hear(*args, **kwargs)
    monkeypatch.setattr(phones, "_hear", hear_or_die)
    workers = _record_workers(monkeypatch)
    assert phones.recognize_words(audio, max_utterance_s=1.5, workers=2) == one
    assert len(here) == len(one.utterances)             # the parent heard the worker's share too
    assert len(workers) == 1 and _reaped(workers[0])


def test_a_batch_heard_ahead_gives_each_clip_its_own_track(tmp_path, sfm_dir):
    """A folder with the word front end: the next clip is heard in a child while this one is
    (the command has no torch, so _Hearings runs ahead); every track equals the track of the
    same clip animated alone, and a clip that cannot be read is reported without stopping the rest."""
    import shutil
    from evp_anim.tracks import load_track
    d = tmp_path / "in"
    d.mkdir()
    for name in ("001.wav", "002.wav", "003.wav"):
        shutil.copy(DEV / name, d / name)
    (d / "004.wav").write_bytes(b"RIFF not a wav")
    r = subprocess.run([sys.executable, "-m", "evp_anim", "--quiet", "animate", str(d), "-o", str(tmp_path / "out"),
                        "--sfm-dir", str(sfm_dir)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "004.wav" in r.stderr and "1 of 4 inputs failed" in r.stderr, r.stderr
    for name in ("001", "002", "003"):
        alone = tmp_path / f"{name}.npz"
        s = subprocess.run([sys.executable, "-m", "evp_anim", "--quiet", "animate", str(DEV / f"{name}.wav"),
                            "-o", str(alone), "--sfm-dir", str(sfm_dir)], capture_output=True, text=True, cwd=REPO)
        assert s.returncode == 0, s.stderr
        got, want = load_track(tmp_path / "out" / f"{name}.npz"), load_track(alone)
        assert "words heard" in got.info["front_end"]
        np.testing.assert_array_equal(got.landmarks_3d, want.landmarks_3d)


def test_the_search_dictionary_keeps_the_language_models_common_words():
    """The word search hears from the trigram model's 20,000 most probable words, with every
    CMUdict pronunciation of each: common words stay (with their alternates), rare ones go."""
    import evp_anim.audio.phones as phones
    model = phones.require_pocketsphinx("test")
    lines = phones._search_dictionary(model, phones.SEARCH_VOCABULARY).splitlines()
    words = {line.split(" ", 1)[0].split("(", 1)[0] for line in lines}
    assert len(words) == phones.SEARCH_VOCABULARY
    assert 21_000 < len(lines) < 25_000                  # alternates included
    assert {"eight", "spades", "clubs", "hearts", "the", "forward"} <= words
    assert not {"zyzzyva", "postman"} & words           # outside the 20,000
    with open(f"{model}/en-us/cmudict-en-us.dict", encoding="utf-8") as f:
        whole = [line.rstrip("\n") for line in f]
    assert set(lines) <= set(whole)
    assert sum(line.split(" ", 1)[0].split("(", 1)[0] == "the" for line in whole) == \
        sum(line.split(" ", 1)[0].split("(", 1)[0] == "the" for line in lines) >= 2
    small = phones._search_dictionary(model, 1000).splitlines()
    assert set(small) < set(lines) and "the" in {line.split(" ", 1)[0] for line in small}


def test_the_smaller_search_hears_the_words_the_whole_dictionary_hears():
    """On a real recording the 20,000-word search hears what the 126,000-word one hears."""
    import evp_anim.audio.phones as phones
    audio = load_audio(CLIP)
    small = phones.recognize_words(audio, workers=1)
    whole = phones.recognize_words(audio, workers=1, vocabulary=None)
    assert small.text == whole.text == "eight of spades four of clubs seven of hearts"
    assert small.phones == whole.phones


def test_the_search_dictionary_is_kept_in_the_user_cache(tmp_path, monkeypatch):
    """Written once to the per-user cache and read from there after; where the cache cannot be
    written, a temporary file the decoder's maker deletes."""
    import evp_anim.audio.phones as phones
    model = phones.require_pocketsphinx("test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, temporary = phones._search_dictionary_file(model, 1000)
    assert not temporary and path.startswith(str(tmp_path / "cache" / "evp-anim" / "pocketsphinx"))
    with open(path, encoding="utf-8") as f:
        assert f.read() == phones._search_dictionary(model, 1000)
    monkeypatch.setattr(phones, "_search_dictionary", lambda *a: pytest.fail("ranked the words again"))
    assert phones._search_dictionary_file(model, 1000) == (path, False)
    monkeypatch.undo()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    path, temporary = phones._search_dictionary_file(model, 1000)
    assert temporary and not path.startswith(str(blocked))
    import os
    os.unlink(path)
    made = []
    real = phones._search_dictionary_file
    monkeypatch.setattr(phones, "_search_dictionary_file", lambda *a: made.append(real(*a)) or made[-1])
    phones._word_decoder(model, 1000)
    assert made[0][1] and not os.path.exists(made[0][0])      # the temporary file was deleted
