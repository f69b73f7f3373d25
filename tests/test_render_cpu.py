"""The renderer on a CPU without a terminal: precision chosen from the CPU's flags, progress lines
with steps/s and an ETA in captured (non-TTY) output, log.csv growing while training, the warning
for a budget too small to converge, and eval-video's figures as strict JSON (null + reason, never
NaN). Tiny 64 px crops and budgets of seconds keep each test short."""

import io
import json

import pytest

from evp_anim.errors import EvpError
from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
from evp_anim.progress import Reporter
from evp_anim.tracks import load_track
from render import trainer as trainer_mod
from render.data import TargetFrames, video_fingerprint
from render.pipeline import evaluate_renderer, train_target
from render.trainer import MIN_CONVERGED_STEPS, RenderTrainConfig, RenderTrainer, choose_precision

SIZE = 64
N = 24


@pytest.fixture(scope="module")
def target(tmp_path_factory, sfm_dir):
    d = tmp_path_factory.mktemp("render_cpu")
    video = d / "target.mp4"
    cfg = SyntheticFootageConfig(n_frames=N, width=160, height=160, face_px=80, seed=2)
    make_synthetic_footage(video, sfm_dir, cfg, track_path=d / "target.npz")
    return {"video": video, "track": d / "target.npz"}


def test_precision_is_fp32_without_native_bf16_and_bf16_with_it(monkeypatch):
    avx2_only = {"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f"}
    monkeypatch.setattr(trainer_mod, "cpu_flags", lambda: avx2_only)
    bf16, why = choose_precision("auto")
    assert bf16 is False and why.startswith("precision: fp32") and "no native bf16" in why
    bf16, why = choose_precision("bf16")      # asked for: honoured, with the cost said
    assert bf16 is True and "slower" in why
    # With native flags the generator's step decides: bf16 only if it is ≥ 1.15× faster.
    monkeypatch.setattr(trainer_mod, "cpu_flags", lambda: avx2_only | {"avx512_bf16"})
    monkeypatch.setattr(trainer_mod, "_time_generator_step", lambda size: (0.30, 0.19))
    bf16, why = choose_precision("auto")
    assert bf16 is True and "0.19 s in bf16 against 0.30 s in fp32" in why
    monkeypatch.setattr(trainer_mod, "cpu_flags", lambda: avx2_only | {"amx_bf16"})
    monkeypatch.setattr(trainer_mod, "_time_generator_step", lambda size: (0.30, 0.28))
    bf16, why = choose_precision("auto")
    assert bf16 is False and "reports amx_bf16" in why
    assert choose_precision("fp32")[0] is False
    monkeypatch.setattr(trainer_mod, "cpu_flags", set)    # flags unreadable (not Linux): fp32
    assert choose_precision("auto")[0] is False
    with pytest.raises(EvpError, match="--precision"):
        choose_precision("fp16")


def test_progress_lines_log_csv_and_few_steps_warning_without_a_terminal(target, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(trainer_mod, "PROGRESS_EVERY_S", 0.5)   # 30 s in real runs
    buf = io.StringIO()                                          # not a TTY
    assert not buf.isatty()
    seen_rows = []
    real_after_step = trainer_mod.TrainingPace.after_step

    def after_step(self, adversarial=False):      # read log.csv while the run is going on
        real_after_step(self, adversarial)
        if self.tr.step == 3:
            seen_rows.extend((self.tr.dir / "log.csv").read_text().splitlines())

    monkeypatch.setattr(trainer_mod.TrainingPace, "after_step", after_step)
    out = tmp_path / "m"
    meta = train_target(target["video"], target["track"], out, size=SIZE, minutes=0.06, holdout=0.25,
                        preview_every=0, rep=Reporter(stream=buf))
    text = buf.getvalue()
    assert "precision: fp32 (auto: this CPU has no native bf16" in text
    progress = [ln for ln in text.splitlines() if ln.startswith("train: step ")]
    assert progress and all("steps/s" in ln and "ETA" in ln for ln in progress), text
    warns = [ln for ln in text.splitlines() if ln.startswith("warning: ")]
    assert len(warns) == 1 and f"~{MIN_CONVERGED_STEPS:,}" in warns[0] and "more minutes" in warns[0] \
        and "--size" in warns[0] and "GPU" in warns[0], text
    # log.csv had the header and a row per step already at step 3, and a row per step at the end
    assert seen_rows[0] == "stage,step,loss,terms" and len(seen_rows) == 4
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == meta["steps"] + 1 and meta["steps"] > 3
    assert json.loads(rows[-1].split(",", 3)[3].strip('"').replace('""', '"'))["seconds"] > 0


def test_machine_readable_progress_carries_rate_eta_and_warning(target, tmp_path, monkeypatch):
    frames = TargetFrames.load(target["video"], load_track(target["track"]), SIZE, holdout=0.25)
    cfg = RenderTrainConfig(size=SIZE, batch=1, preview_every=0)
    buf = io.StringIO()
    rep = Reporter(machine_readable=True, stream=buf)
    tr = RenderTrainer(frames, tmp_path / "m", cfg, video_fingerprint(target["video"]), {}, steps=12)

    def progress(frac, logs):
        rep.fraction(frac, **tr.pace.fields())
        w = tr.pace.few_steps_warning()
        if w:
            rep.warning(w)

    tr.progress = progress
    rep.start("render-train")
    tr.run()
    events = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    timed = [e for e in events if e["event"] == "progress" and e.get("steps_per_s")]
    assert timed and timed[-1]["steps_per_s"] > 0 and timed[-1]["eta_s"] >= 0 and timed[-1]["expected_steps"] == 12
    assert [e["message"] for e in events if e["event"] == "warning"][0].startswith("--steps 12 is fewer")


def test_pace_estimates_the_budget_with_a_slower_adversarial_phase():
    class Tr:     # a trainer stand-in: 0.5 s/step measured in the L1 phase, 10 min budget
        step, elapsed, max_steps, max_seconds = 0, 0.0, None, 600.0
        cfg = RenderTrainConfig(gan_start=0.75)

        def frac_done(self):
            return self.elapsed / self.max_seconds

    tr, now = Tr(), [0.0]
    pace = trainer_mod.TrainingPace(tr, clock=lambda: now[0], every_s=30)
    for _ in range(5):
        tr.step += 1
        now[0] += 0.5
        tr.elapsed = now[0]
        pace.after_step()
    assert pace.rate == pytest.approx(2.0)
    # 447.5 s of L1 at 2 steps/s + 150 s of adversarial steps at 1 step/s
    assert pace.expected_steps() == int(5 + 447.5 * 2 + 150 * 1)
    assert pace.eta_s() == pytest.approx(597.5)
    assert "steps/s" in pace.line() and pace.line() is None      # the next one only after 30 s
    now[0] += 31
    assert pace.line() is not None
    assert pace.few_steps_warning() is not None and pace.few_steps_warning() is None   # once


def test_eval_video_json_has_null_and_reason_for_an_undetected_face(target, tmp_path, monkeypatch):
    import evp_anim.footage.tracking as tracking
    frames = TargetFrames.load(target["video"], load_track(target["track"]), SIZE, holdout=0.25)
    d = tmp_path / "m"
    RenderTrainer(frames, d, RenderTrainConfig(size=SIZE, batch=1, preview_every=0),
                  video_fingerprint(target["video"]), {}, steps=1).run()
    (d / "target_track.npz").write_bytes(target["track"].read_bytes())
    real_track = tracking.track_frames
    calls = []

    def track_frames(frames, fps, *a, **kw):   # dlib finds no face on the generated frames
        calls.append(len(frames))
        if len(calls) == 1:
            raise EvpError("no face found in the video")
        return real_track(frames, fps, *a, **kw)

    monkeypatch.setattr(tracking, "track_frames", track_frames)
    buf = io.StringIO()
    res = evaluate_renderer(d, target["video"], json_out=tmp_path / "m.json", rep=Reporter(stream=buf))
    assert res["mouth_ld_px"] is None and "no face found" in res["null_reasons"]["mouth_ld_px"]

    def strict(token):
        raise ValueError(f"non-standard JSON number {token}")

    data = json.loads((tmp_path / "m.json").read_text(), parse_constant=strict)
    assert data["mouth_ld_px"] is None and data["null_reasons"]["mouth_ld_px"].startswith("no face found")
    assert data["frames_without_face"] == calls[0]
    assert "mouth landmark distance (dlib re-detected vs driving) n/a (no face found" in buf.getvalue()


def test_non_finite_figures_become_null_with_a_reason():
    from render.video_metrics import finite_or_null
    out = finite_or_null({"psnr_db": float("inf"), "ssim_face": float("nan"), "ssim": 0.9}, {})
    assert out["psnr_db"] is None and "infinite PSNR" in out["null_reasons"]["psnr_db"]
    assert out["ssim_face"] is None and out["null_reasons"]["ssim_face"] and out["ssim"] == 0.9
    json.dumps(out, allow_nan=False)


def test_generator_step_is_timed_in_both_precisions():
    """The probe behind auto: a real generator forward + backward, positive times, ~1 s."""
    fp32_s, bf16_s = trainer_mod._time_generator_step(64, reps=1)
    assert 0 < fp32_s < 30 and 0 < bf16_s < 30
