"""The faults the simulated plant can develop, and the standard set ``--fault-asset`` injects.

A :class:`Fault` is a developing bearing defect, a slow drift (tool wear), a level shift or
outliers in one signal from a chosen time; :func:`Fault.level` says how far it has developed at
each moment, which the generators in :mod:`shopfloor.tools.simulate_plant` scale it by. Kept apart
from the generators because a fault is a plain description: the command line
(:mod:`shopfloor.tools.simulate`) builds them, the plant checks and applies them. Re-exported by
:mod:`shopfloor.tools.simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["FAULT_KINDS", "Fault", "standard_faults"]

FAULT_KINDS = ("bearing", "drift", "shift", "outliers")


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault in one signal from ``start`` seconds after the run's start.

    Attributes
    ----------
    kind
        ``bearing`` (frame signals): impacts of ``size`` g at full severity. ``drift``: the
        mean moves by ``size`` healthy standard deviations over ``ramp`` seconds and stays.
        ``shift``: a step of ``size`` standard deviations. ``outliers``: from ``start`` on,
        5 % of the values are off by ``size`` standard deviations, either way.
    ramp
        Seconds from ``start`` to full size (``bearing`` and ``drift``); 0 is a step.
    """

    asset: str
    signal: str
    kind: str
    start: float
    size: float
    ramp: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {self.kind!r}"
            )
        for name in ("start", "size", "ramp"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"fault {name} must be a finite number >= 0; got {value!r}")

    def level(self, offset: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fraction of full size at each offset (seconds): 0 before ``start``, 1 after the ramp."""
        since = offset - self.start
        if self.ramp == 0.0:
            return (since >= 0.0).astype(np.float64)
        return np.clip(since / self.ramp, 0.0, 1.0)


def standard_faults(asset: str, start: float) -> tuple[Fault, ...]:
    """The faults ``shopfloor simulate --fault-asset`` injects into ``asset`` from ``start``.

    A ``motor-*`` asset develops an outer-race defect over a minute; a ``station-*`` asset's
    diameter drifts by 8 sigma over a minute (tool wear, hurried for a demo: at 2 parts a second
    the agent's z-score sees it, while a drift several times slower per part is learned as the
    new normal) while its torque steps by 4 sigma and throws 8-sigma outliers (a worn clutch).
    """
    if asset.startswith("motor-"):
        return (Fault(asset, "accel", "bearing", start, size=0.3, ramp=60.0),)
    if asset.startswith("station-"):
        return (
            Fault(asset, "diameter_mm", "drift", start, size=8.0, ramp=60.0),
            Fault(asset, "torque_nm", "shift", start, size=4.0),
            Fault(asset, "torque_nm", "outliers", start, size=8.0),
        )
    raise ValueError(f"faults are injected into motor-N or station-N assets; got {asset!r}")
