"""Tools around the agent: replay of recorded data (``replay``, ``csv*``, ``plot``,
``scores``), the demo and its simulated plant (``demo*``, ``simulate*``, ``synthetic``,
``broker``, ``embedded_broker``) and the live view (``liveview*``).
"""
