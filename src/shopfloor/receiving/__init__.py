"""Receiving: a sample's way in.

The MQTT link (``mqtt*``), the payload codecs (``codecs``, ``json_codec``, ``frame_codec``,
``sparkplug*`` and the value types they share in ``readings``), topic templates (``topics``),
the signal table (``admission``) and ``ingest``, which routes each decoded reading to the
bounded queue.
"""
