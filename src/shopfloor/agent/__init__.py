"""The agent: the long-running service around receiving and scoring.

``run`` (the :class:`~shopfloor.agent.run.Agent` itself), its configuration (``config``),
the worker (``worker``, ``worker_banks``) or the scoring processes (``pool``, ``scorer``),
anomaly events (``events``), metrics (``metrics``, ``metrics_server``), checkpoints
(``checkpoints``, ``state``), warm-up, systemd and the fleet of agents (``fleet``).
"""
