"""The photometric ops for real datasets, compiled into the DALI graph.

Each entry of :data:`COMPILERS` maps a :mod:`segkit.recipes` op class to a function
``(op, context) -> DaliOp`` (see :mod:`segkit_dali._ops` for the ``DaliOp`` contract:
parameters drawn in Python per ``(seed, epoch, index)``; photometric ops touch the image
only).
"""

from __future__ import annotations

from segkit_dali._ops import Compiler

COMPILERS: dict[type, Compiler] = {}
