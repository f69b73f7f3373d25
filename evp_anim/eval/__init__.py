"""Evaluation of generated landmark sequences: EVP's metrics, an emotion judge, probes, baselines.

* :mod:`.metrics` — LD / LVD on the mouth (M-) and the whole face (F-), EVP §4 / Table 1.
* :mod:`.emotion_classifier` — a landmark-sequence emotion classifier trained on ground truth,
  the judge of the emotion of generated sequences.
* :mod:`.probes` — logistic-regression probes of how well content and emotion codes are
  disentangled.
* :mod:`.baselines` — a static mean face and a rule-based phoneme → viseme animator.
* :mod:`.report` — :func:`~.report.evaluate`, :func:`~.report.ablation_table`,
  :func:`~.report.plot_emotion_codes`; the ``evp-anim eval`` command lives in :mod:`.commands`.
"""
