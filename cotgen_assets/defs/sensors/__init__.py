"""The sensor that carries a submitted batch on to the next stage: see sensor.py."""

from cotgen_assets.defs.sensors.sensor import batch_completion_sensor, decide_launches

__all__ = ["batch_completion_sensor", "decide_launches"]
