"""Actuators: the things pdscale scales. Each imports its SDK lazily; none imports another."""

__all__: list[str] = []
