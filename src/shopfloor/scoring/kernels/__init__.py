"""Numba hot loops, and nothing else.

Every kernel takes arrays and scalars, returns arrays, keeps its running state in small numpy
arrays (so a pipeline can checkpoint it), skips NaN and inf instead of being poisoned by them,
and sits behind a public wrapper that checks dtype and shape. The JIT options live in one place,
:mod:`shopfloor.scoring.kernels._jit`.
"""

from __future__ import annotations

__all__: list[str] = []
