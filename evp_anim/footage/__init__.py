"""Target footage: decode, 68-point tracking, 3DMM fitting, 3D-aware alignment (EVP Sec. 3.3).

Modules, in data-flow order:

* :mod:`.video` — decode any common video to 25 fps frames (timestamps, rotation metadata).
* :mod:`.smoothing` — One-Euro filter for landmark jitter.
* :mod:`.tracking` — dlib HOG detection + 68-point shape predictor, followed between frames.
* :mod:`.fitting` — SFM fit: one identity per video (eos), pose + expression per frame.
* :mod:`.alignment` — EVP Eq. 8: speech landmarks posed with the target's head motion.
* :mod:`.synthetic` — rendered SFM-head footage with ground-truth tracks (tests, renderer).
* :mod:`.film_clip` — a film-like synthetic clip (two people, cuts, a held blink, a 40° turn)
  with exact ground truth, for testing tracking on film footage.
* :mod:`.overlay` — landmarks drawn over the footage, for checking by eye.
"""
