# Two commands do all set-up on a fresh machine:
#   make dashboard   set up .venv and start the dashboard (CPU, the seed config) on http://localhost:8501
#   make test        set up .venv (+ Debian's chromium for the browser test) and run the whole test suite
.PHONY: dashboard test lint bench setup

setup:
	bash scripts/bootstrap.sh

dashboard: setup
	.venv/bin/xtlens dashboard

test:
	bash scripts/bootstrap.sh --browser
	.venv/bin/ruff check .
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python benchmarks/harness_overhead.py
	.venv/bin/python benchmarks/flop_count_speed.py
	.venv/bin/python benchmarks/cpu_sweep.py
	.venv/bin/python benchmarks/ray_overhead.py
