"""where and how jobs run: plan, sweep, the child-process worker, the executor (local or Ray), limits, device."""
