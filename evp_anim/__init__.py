"""evp-anim: speech to emotional facial animation.

The stages read and write :class:`evp_anim.tracks.Track` files; see ``docs`` in the README.
"""

__version__ = "0.1.0"

# Before anything imports numpy: OpenBLAS picks its kernels once, when it loads (see blas_kernel.py).
from .blas_kernel import choose_openblas_kernel

choose_openblas_kernel()
