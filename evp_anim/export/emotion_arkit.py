"""The rig's six SFM emotion blendshapes (``sfm_*``) expressed as ARKit shapes, fitted to the rig.

Why: tracks lifted from landmarks (EVP) carry much of their emotion in ``sfm_happiness`` … ``sfm_surprise``,
which no ARKit character has. :func:`evp_anim.export.arkit.to_arkit52` therefore adds, for every
``sfm_*`` channel, its weight times the row of :data:`SFM_TO_ARKIT` below onto the ARKit columns.

How the table was made (:func:`fit_sfm_to_arkit`, re-run by ``tests/test_emotion_arkit.py``
against the real SFM files, so the constants cannot drift from the geometry):

1. **Target**: the sfm channel's (N, 3) vertex delta on the SFM mean mesh (mm, all 3448 vertices).
2. **Basis**: the rig's own ARKit-named channels (:mod:`evp_anim.face.articulation`). Left/Right
   twins are tied (one column = Left + Right delta), so the mapping is symmetric: the SFM scans'
   small left/right asymmetries are not turned into one-sided ARKit shapes.
3. **Candidates**: the ARKit shapes of the emotion's FACS action units (EMFACS prototypes,
   :data:`FACS_CANDIDATES`). A fit over *all* channels (``all-35`` below) explains a little more
   (most for sadness: 0.86 against 0.99) but does so with shapes that mean something else on an
   ARKit character: fear and disgust get ``mouthSmile`` 0.5–0.8 (the smile's sideways corner
   pull standing in for a lip stretch), anger ``browInnerUp`` 0.67, happiness ``browInnerUp``
   0.38 (the scan's forehead shift), sadness a pout from ``mouthFunnel`` + ``mouthClose`` +
   ``mouthDimple`` (ARKit's pout-like ``mouthShrugLower`` is not a rig channel). Restricting the
   candidates drops those terms; this is the one judgement in the table.
4. **Fit**: bounded least squares (``scipy.optimize.lsq_linear``), weights in [0, 1]; terms under
   :data:`MIN_TERM` are dropped and the rest refitted.

Residuals are ``|fit − target| / |target|`` over the mesh vertices (and over the 68 landmarks).
They are high because the SFM expression scans also move the whole head (up to 1.8 mm of
translation and ~7° of rotation, plus non-rigid changes over the skull and neck, where no
articulation channel acts), which no local ARKit shape can or should reproduce.

==============  ====================================================  ========  ======  ======
sfm channel     ARKit weights per unit of the sfm channel                mesh res  lm res  all-35
                (each Left/Right twin alike)
==============  ====================================================  ========  ======  ======
sfm_anger       eyeSquint 1, mouthUpperUp 0.66, eyeWide 0.41,            0.958     0.912   0.876
                browDown 0.32, noseSneer 0.27
sfm_disgust     mouthUpperUp 1, noseSneer 1, cheekSquint 1,              0.827     0.782   0.784
                eyeSquint 0.75, browDown 0.64, mouthLowerDown 0.42
sfm_fear        browInnerUp 0.96, mouthStretch 0.77, jawOpen 0.26,       0.823     0.781   0.726
                browOuterUp 0.17, eyeSquint 0.14
sfm_happiness   mouthSmile 1, cheekSquint 1, mouthUpperUp 0.93,          0.846     0.808   0.807
                mouthLowerDown 0.56, jawOpen 0.13
sfm_sadness     browInnerUp 0.7, eyeSquint 0.48, browDown 0.16           0.993     0.986   0.859
sfm_surprise    jawOpen 1, mouthLowerDown 1, browInnerUp 1,              0.537     0.527   0.519
                browOuterUp 1, eyeWide 0.22
==============  ====================================================  ========  ======  ======

(``all-35``: residual of the unconstrained fit over every ARKit-named rig channel, for comparison.)
The numbers in this table are printed by ``python -m evp_anim.export.emotion_arkit [SFM_DIR]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# ARKit shapes each emotion may use: the FACS action units of its EMFACS prototypes, through the
# same AU ↔ ARKit reading as evp_anim.export.formats.OPENFACE_AU_FROM_ARKIT (AU1 browInnerUp,
# AU2 browOuterUp, AU4 browDown, AU5 eyeWide, AU6 cheekSquint, AU7 eyeSquint, AU9 noseSneer,
# AU10 mouthUpperUp, AU12 mouthSmile, AU15 mouthFrown, AU16 mouthLowerDown, AU20 mouthStretch,
# AU23/24 mouthPress, AU25/26 jawOpen + lips apart). Names without side = both twins.
FACS_CANDIDATES: dict[str, tuple[str, ...]] = {
    # 4+5+7+23/24, often with 9/10 and lips apart
    "sfm_anger": ("browDown", "eyeWide", "eyeSquint", "mouthPress", "noseSneer", "mouthUpperUp", "jawOpen"),
    # 9 and/or 10 with 15/16/17, 4, 6/7, lips apart
    "sfm_disgust": ("noseSneer", "mouthUpperUp", "mouthLowerDown", "mouthFrown", "browDown", "cheekSquint",
                    "eyeSquint", "jawOpen"),
    # 1+2+4+5+7+20, 25/26
    "sfm_fear": ("browInnerUp", "browOuterUp", "browDown", "eyeWide", "eyeSquint", "mouthStretch", "jawOpen",
                 "mouthLowerDown"),
    # 6+12 (Duchenne: 6 with the lower lid), lips apart / teeth shown (10, 16, 25/26)
    "sfm_happiness": ("mouthSmile", "cheekSquint", "eyeSquint", "mouthUpperUp", "mouthLowerDown", "jawOpen"),
    # 1+4+15, drooping lids (a little blink), 7
    "sfm_sadness": ("browInnerUp", "browDown", "mouthFrown", "eyeBlink", "eyeSquint"),
    # 1+2+5+26/27
    "sfm_surprise": ("browInnerUp", "browOuterUp", "eyeWide", "jawOpen", "mouthLowerDown"),
}

MIN_TERM = 0.1   # weights below this are dropped (then the rest is refitted): too small to see

# The fitted table (see the module docstring): sfm channel -> {ARKit channel: weight per unit}.
# Regenerate with `python -m evp_anim.export.emotion_arkit`; tests check it equals the fit.
SFM_TO_ARKIT: dict[str, dict[str, float]] = {
    "sfm_anger": {
        "eyeSquintLeft": 1, "eyeSquintRight": 1, "mouthUpperUpLeft": 0.66, "mouthUpperUpRight": 0.66,
        "eyeWideLeft": 0.41, "eyeWideRight": 0.41, "browDownLeft": 0.32, "browDownRight": 0.32,
        "noseSneerLeft": 0.27, "noseSneerRight": 0.27,
    },
    "sfm_disgust": {
        "mouthUpperUpLeft": 1, "mouthUpperUpRight": 1, "noseSneerLeft": 1, "noseSneerRight": 1,
        "cheekSquintLeft": 1, "cheekSquintRight": 1, "eyeSquintLeft": 0.75, "eyeSquintRight": 0.75,
        "browDownLeft": 0.64, "browDownRight": 0.64, "mouthLowerDownLeft": 0.42, "mouthLowerDownRight": 0.42,
    },
    "sfm_fear": {
        "browInnerUp": 0.96, "mouthStretchLeft": 0.77, "mouthStretchRight": 0.77, "jawOpen": 0.26,
        "browOuterUpLeft": 0.17, "browOuterUpRight": 0.17, "eyeSquintLeft": 0.14, "eyeSquintRight": 0.14,
    },
    "sfm_happiness": {
        "mouthSmileLeft": 1, "mouthSmileRight": 1, "cheekSquintLeft": 1, "cheekSquintRight": 1,
        "mouthUpperUpLeft": 0.93, "mouthUpperUpRight": 0.93, "mouthLowerDownLeft": 0.56,
        "mouthLowerDownRight": 0.56, "jawOpen": 0.13,
    },
    "sfm_sadness": {
        "browInnerUp": 0.7, "eyeSquintLeft": 0.48, "eyeSquintRight": 0.48, "browDownLeft": 0.16,
        "browDownRight": 0.16,
    },
    "sfm_surprise": {
        "jawOpen": 1, "mouthLowerDownLeft": 1, "mouthLowerDownRight": 1, "browInnerUp": 1,
        "browOuterUpLeft": 1, "browOuterUpRight": 1, "eyeWideLeft": 0.22, "eyeWideRight": 0.22,
    },
}

# |fit - target| / |target| of each row: (mesh vertices, 68 landmarks, the unconstrained all-channel fit's mesh).
SFM_TO_ARKIT_RESIDUAL: dict[str, tuple[float, float, float]] = {
    "sfm_anger": (0.958, 0.912, 0.876),
    "sfm_disgust": (0.827, 0.782, 0.784),
    "sfm_fear": (0.823, 0.781, 0.726),
    "sfm_happiness": (0.846, 0.808, 0.807),
    "sfm_sadness": (0.993, 0.986, 0.859),
    "sfm_surprise": (0.537, 0.527, 0.519),
}


@dataclasses.dataclass
class SfmFit:
    """One sfm channel's fit: ``weights`` {ARKit channel: weight in [0, 1]} (both twins listed),
    ``residual_mesh`` / ``residual_landmarks`` relative residuals of those weights, and
    ``residual_all`` the mesh residual of the unconstrained fit over every ARKit-named channel;
    ``full`` that fit's weights {tied name: weight} (for inspection)."""

    weights: dict[str, float]
    residual_mesh: float
    residual_landmarks: float
    residual_all: float
    full: dict[str, float]


def _twin_groups(channels) -> dict[str, list[str]]:
    """{"mouthSmile": ["mouthSmileLeft", "mouthSmileRight"], "jawOpen": ["jawOpen"], …}."""
    groups: dict[str, list[str]] = {}
    for c in channels:
        base = c[:-4] if c.endswith("Left") else c[:-5] if c.endswith("Right") else c
        groups.setdefault(base, []).append(c)
    return groups


def fit_sfm_to_arkit(rig, candidates: dict[str, tuple[str, ...]] | None = None,
                     min_term: float = MIN_TERM) -> dict[str, SfmFit]:
    """Fit every ``sfm_*`` channel of ``rig`` (a :class:`~evp_anim.face.rig.FaceRig`) as a
    non-negative, ≤ 1 combination of its ARKit-named channels (see the module docstring).

    Returns {sfm channel: :class:`SfmFit`}, weights rounded to 2 decimals. Needs scipy.
    """
    from scipy.optimize import lsq_linear

    from ..face.channels import arkit_name

    cands = FACS_CANDIDATES if candidates is None else candidates
    names = list(rig.channels)
    deltas = np.asarray(rig.deltas, np.float64)                     # (K, N, 3) mm per unit weight
    lv = np.asarray(rig.landmark_vertices)
    groups = _twin_groups([c for c in names if arkit_name(c) is not None])
    gnames = list(groups)
    cols = np.stack([sum(deltas[names.index(c)] for c in groups[g]) for g in gnames])   # (G, N, 3)
    a_mesh = cols.reshape(len(gnames), -1).T
    a_lm = cols[:, lv].reshape(len(gnames), -1).T

    def solve(a, b, use):
        x = np.zeros(len(gnames))
        if use:
            x[use] = lsq_linear(a[:, use], b, bounds=(0.0, 1.0)).x
        return x

    def rel(a, x, b):
        return float(np.linalg.norm(a @ x - b) / np.linalg.norm(b))

    out = {}
    for sfm in (c for c in names if c.startswith("sfm_")):
        b = deltas[names.index(sfm)].ravel()
        b_lm = deltas[names.index(sfm)][lv].ravel()
        everything = solve(a_mesh, b, list(range(len(gnames))))
        use = [gnames.index(g) for g in cands.get(sfm, ()) if g in groups]
        x = solve(a_mesh, b, use)
        use = [j for j in use if x[j] >= min_term]
        x = np.round(solve(a_mesh, b, use), 2)    # refit without the dropped terms
        weights = {c: float(x[j]) for j in np.argsort(-x, kind="stable") if x[j] > 0 for c in groups[gnames[j]]}
        out[sfm] = SfmFit(weights=weights, residual_mesh=rel(a_mesh, x, b), residual_landmarks=rel(a_lm, x, b_lm),
                          residual_all=rel(a_mesh, everything, b),
                          full={gnames[j]: round(float(everything[j]), 2) for j in np.argsort(-everything)
                                if everything[j] >= 0.005})
    return out


def _main(argv: list[str]) -> None:
    from ..assets import find_sfm_dir
    from ..face.rig import FaceRig

    fits = fit_sfm_to_arkit(FaceRig(find_sfm_dir(argv[0] if argv else None)))
    for sfm, f in fits.items():
        tied = {}
        for c, v in f.weights.items():
            tied.setdefault(c.removesuffix("Left").removesuffix("Right"), v)
        print(f"{sfm:14s} res mesh {f.residual_mesh:.3f} lm {f.residual_landmarks:.3f} all-35 {f.residual_all:.3f}: "
              + ", ".join(f"{k} {v:g}" for k, v in tied.items()))
        print(f"{'':14s} unconstrained: " + ", ".join(f"{k} {v:g}" for k, v in f.full.items()))
    print("SFM_TO_ARKIT =", {s: f.weights for s, f in fits.items()})
    print("SFM_TO_ARKIT_RESIDUAL =", {s: (round(f.residual_mesh, 3), round(f.residual_landmarks, 3),
                                          round(f.residual_all, 3)) for s, f in fits.items()})


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
