"""MQTT for the SensorThings API: the broker connection and the Observation publisher (docs/sensorthings.md)."""
