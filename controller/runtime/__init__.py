"""The daemon's runtime: settings, plugin registry, wiring, the control loop, its audit trail and state store,
telemetry and logging. It drives the core; it does not know the offline lab or the command line."""
