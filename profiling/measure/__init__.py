"""what is measured: (config, workload) -> rows (FLOPs, memory, latency, breakdown, what-if, setups)."""
