"""Sensors: waits on Feast state (feature freshness); deferrable, reschedule and poke modes."""
