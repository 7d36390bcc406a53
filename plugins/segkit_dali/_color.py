"""The photometric ops for real datasets, compiled into the DALI graph.

Each entry of :data:`COMPILERS` maps a :mod:`segkit.recipes` op class to a function
``(op, context) -> DaliOp`` (see :mod:`segkit_dali._ops` for the ``DaliOp`` contract:
parameters drawn in Python per ``(seed, epoch, index)``; photometric ops touch the image
only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import nvidia.dali.fn as fn

from segkit import recipes as R
from segkit_dali._ops import Compiler, DaliOp, Param, Params, Rows, Shapes, uniform


def blur_widths(blur_limit: tuple[int, int], sigma: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Kernel widths as albumentations 2.0.8's ``GaussianBlur`` picks them.

    With ``blur_limit=(0, 0)`` the width follows sigma: ``int(sigma * 3.5) * 2 + 1``
    (PIL's rule; always odd). Otherwise an integer uniform in ``blur_limit`` (both ends
    included, ``random.randint``) made odd by adding 1 to an even one, so the lower
    bound is half as likely as each other odd width. ``u`` is ``U[0, 1)`` per sample.
    """
    lo, hi = (int(v) for v in blur_limit)
    if (lo, hi) == (0, 0):
        return (np.floor(sigma * 3.5) * 2 + 1).astype(np.int32)
    width = lo + np.minimum(np.floor(u * (hi - lo + 1)), hi - lo).astype(np.int64)
    return (width + (width % 2 == 0)).astype(np.int32)


class GaussianBlur(DaliOp):
    """``fn.gaussian_blur`` with a per-sample sigma and width (argument inputs).

    DALI's kernel is albumentations' (``exp(-x^2 / 2 sigma^2)`` over the window,
    normalized), its border is OpenCV's ``BORDER_REFLECT_101`` and it rounds to nearest
    as ``cv2.sepFilter2D`` does for uint8: the output is bit-identical for the same
    sigma and width (tests/test_dali_color.py).
    """

    params = (Param("sigma", np.float32), Param("width", np.int32))

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        lo, hi = self.op.sigma_limit
        u = uniform(rng, n, rows, 2)
        sigma = lo + (hi - lo) * u[:, 0]
        width = blur_widths(self.op.blur_limit, sigma, u[:, 1])
        return {"sigma": sigma.astype(np.float32), "width": width}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        return fn.gaussian_blur(image, sigma=p["sigma"], window_size=p["width"])


COMPILERS: dict[type, Compiler] = {
    R.GaussianBlur: lambda op, c: GaussianBlur(op),
}
