"""performance-monitoring: equity, metrics, round trips and alerts from broker fills and prices."""
