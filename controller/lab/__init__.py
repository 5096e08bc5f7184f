"""The offline lab: benchmark scenarios and grid, capacity planning on a trace, hindsight demand, reports.
It runs the runtime's control loop against the cluster simulator; the daemon never imports it."""
