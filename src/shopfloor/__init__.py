"""shopfloor: streaming anomaly detection for shop-floor sensors, built to run at the edge.

An agent beside the machines learns what normal looks like for each vibration and quality
signal, scores every sample as it arrives, raises alarms with hysteresis, and publishes what it
finds to MQTT and Prometheus. The same pipeline runs offline in ``shopfloor replay``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
