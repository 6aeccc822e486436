"""The one place that says how shopfloor's kernels are compiled.

Sensor streams carry NaN dropouts and the odd inf, so the fast-math flags deliberately leave out
``nnan`` and ``ninf``: with them LLVM may assume every value is finite and fold a NaN check
away, which silently turns a NaN-skipping RMS into NaN. ``reassoc`` and ``contract`` are kept so
that reductions vectorise.

A function called from a kernel is compiled with the *caller's* flags, whatever decorator it
carries, and numba's cache reuses that compilation. So IEEE-sensitive steps (finishing moments
on large offsets) belong in the caller's Python wrapper or in a ``strict_kernel`` caller, not in
a helper shared with a fast-math kernel. And the cache tracks only the caller's source file:
after editing a kernel that others call, delete the callers' ``*.nbi``/``*.nbc`` files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

FASTMATH_FLAGS: frozenset[str] = frozenset({"nsz", "arcp", "contract", "reassoc"})


def kernel(fn: F) -> F:
    """Compile ``fn`` as a serial, cached, GIL-free shopfloor kernel."""
    return cast(F, numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH_FLAGS))(fn))


def strict_kernel(fn: F) -> F:
    """Like :func:`kernel` but with IEEE semantics, for loops whose results must not depend on
    the order of operations (streaming state that is checkpointed and compared bit for bit)."""
    return cast(F, numba.njit(cache=True, nogil=True)(fn))


def step_kernel(fn: F) -> F:
    """Like :func:`strict_kernel`, for a one-sample step that kernels loop over (the per-signal
    kernels and the signal banks share each step, so they agree to the bit): inlined into its
    callers at numba's IR level, so a loop over the step runs as fast as the loop written out
    (a called step with a tuple result cost the alarm loop 8x)."""
    return cast(F, numba.njit(cache=True, nogil=True, inline="always")(fn))
