"""Throughput benchmarks of shopfloor, each figure measured beside its reference.

Run ``python -m benchmarks {area,all} [--quick] [--out DIR] [--compare OLD.json]
[--repeats N]`` from the repository root. An area is a module here with a
``run(bench: Bench) -> None`` function that calls :meth:`benchmarks.harness.Bench.compare`;
adding an area is adding its module and its name to :data:`AREAS`.

Areas
-----
kernels
    Numba kernels against ``np.sum``, ``np.fft.rfft``, NumPy-vectorised and pure-Python
    equivalents (their performance targets, one core).
detectors
    Each detector's ``score_learn``, the River adapters against River called directly, the
    threshold and alarm kernels.
agent
    The agent process (``shopfloor run``) against a bare paho subscriber through one
    Mosquitto: sustained rate for scalar JSON and int16 frames, publish-to-event latency at
    2,000 messages/s, CPU and RSS (skipped without mosquitto).
startup
    ``shopfloor run`` from process start to systemd's ``READY=1`` with an empty and a warm
    Numba cache, and its RSS at READY with and without a River detector (its targets;
    skipped without mosquitto).
metrics
    Rendering ``/metrics`` at the 2,000-signal cap against a plain registry of the same series,
    and the metrics' share of the worker's per-message cost.
scaling
    Cost per JSON sample and per 2048-sample frame from payload through ingest and worker as
    signals grow from 1 to 1,000, what half a core holds, memory per pipeline.
faults
    Not a throughput area and not part of ``all``: ``python -m benchmarks faults [--quick]``
    runs the real agent and Mosquitto through hostile input, overload, kill -9, SIGTERM under
    load, broker restarts, scrape storms, filled tables and a soak, and reports each scenario's
    trials, failures and loss (:mod:`benchmarks.faults`; skipped without mosquitto).
"""

from __future__ import annotations

#: Benchmark areas in the order ``all`` runs them.
AREAS: tuple[str, ...] = ("kernels", "detectors", "agent", "startup", "metrics", "scaling")

__all__ = ["AREAS"]
