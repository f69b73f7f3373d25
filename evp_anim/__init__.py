"""evp-anim: speech to emotional facial animation.

The stages read and write :class:`evp_anim.tracks.Track` files; see ``docs`` in the README.
"""

__version__ = "0.1.0"
