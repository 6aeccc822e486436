"""A vibration signal end to end: frames -> features -> detector -> threshold -> alarm."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.config import config_from_dict
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.detect.gate import Reject
from shopfloor.scoring.pipeline import Plant
from shopfloor.tools.synthetic import bearing_frames

FS, SHAFT, BPFO = 12_000.0, 29.95, 3.5848


def plant(detector: str = "zscore") -> Plant:
    return Plant(
        config_from_dict(
            {
                "signals": [
                    {
                        "asset": "pump-7",
                        "name": "de_accel",
                        "kind": "frame",
                        "valid_range": [-50.0, 50.0],
                        "features": {
                            "sample_rate": FS,
                            "shaft_hz": SHAFT,
                            "defect_orders": {"bpfo": BPFO, "bpfi": 5.4152},
                        },
                        "detector": {"kind": detector},
                        "alarm": {"warmup": 100},
                    }
                ],
            },
            source="test",
        )
    )


@pytest.mark.parametrize("detector", ["zscore", "cusum", "robust_z"])
def test_developing_outer_race_defect_raises_an_alarm_and_healthy_frames_do_not(
    detector: str,
) -> None:
    rng = np.random.default_rng(11)
    p = plant(detector)
    pipe = p.signals["pump-7/de_accel"]
    healthy = pipe.process(bearing_frames(rng, 0, 1500, sample_rate=FS))
    assert not healthy.result.raised.any()
    assert (healthy.result.state[:100] == AlarmState.WARMING_UP).all()
    # A defect that starts small and grows, as spalls do.
    severity = np.linspace(0.02, 0.3, 200)
    frames = np.vstack(
        [
            bearing_frames(rng, 1500 + i, 1, sample_rate=FS, severity=s)
            for i, s in enumerate(severity)
        ]
    )
    faulty = pipe.process(frames)
    first = int(np.flatnonzero(faulty.result.raised)[0])
    assert first < 120, first
    names = pipe.feature_names
    blamed = {names[t] for t in faulty.result.top[first : first + 20] if t >= 0}
    # The impacts ring the 3 kHz resonance and repeat at BPFO: the demodulated envelope at
    # BPFO or the resonance band must lead, not the shaft-rate bands.
    assert blamed & {"env_bpfo", "band_2000_5000_hz"}, blamed
    assert blamed <= {
        "env_bpfo",
        "band_2000_5000_hz",
        "kurtosis",
        "crest_factor",
        "peak",
        "peak_to_peak",
        "rms",
    }, blamed


def test_clipped_and_lost_frames_are_rejected_and_counted() -> None:
    rng = np.random.default_rng(2)
    p = plant()
    pipe = p.signals["pump-7/de_accel"]
    frames = bearing_frames(rng, 0, 5, sample_rate=FS)
    frames[1, 10] = 80.0  # clipped
    frames[2, :] = np.nan  # the sensor dropped the whole frame
    frames[3, :1000] = np.nan  # more than max_missing lost
    frames[4, :5] = np.nan  # a few dropouts: tolerated, filled and counted
    batch = pipe.process(frames)
    assert batch.reason.tolist() == [
        0,
        Reject.OUT_OF_RANGE,
        Reject.MISSING_SAMPLES,
        Reject.MISSING_SAMPLES,
        0,
    ]
    assert dict(pipe.rejected) == {"out_of_range": 1, "missing_samples": 2}
    assert np.isnan(batch.result.score[1:4]).all()
    assert pipe.scored == 2
