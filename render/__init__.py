"""Edge-to-video renderer: per-target training and rendering of dubbed footage (EVP Sec. 3.3).

One module per stage: :mod:`render.guidance` (face crops and guidance maps), :mod:`render.data`
(training pairs), :mod:`render.networks` (generator and discriminators), :mod:`render.losses`
(training losses), :mod:`render.model_file` (model files on disk), :mod:`render.trainer`
(per-target training), :mod:`render.inference` (rendering a dubbed video),
:mod:`render.video_metrics` (``eval-video``), :mod:`render.pipeline` (the library side of
``render train``/``render run``/``eval-video``/``dub``) and :mod:`render.commands` (their CLI).
"""
