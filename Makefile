# The two commands a new user needs; everything else is in deploy/setup.sh.
.PHONY: demo test lint bench clean soak

demo:  ## set up .venv and run the gateway with simulated nodes on every transport
	bash deploy/setup.sh demo
	.venv/bin/fieldgate demo

test:  ## set up .venv (+ Debian test servers), lint, type-check and run the whole test suite
	bash deploy/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/deptry .
	.venv/bin/mypy
	.venv/bin/python -m pytest

DURATION ?= 1h
REPORT ?= build/soak-report
FAULTS ?=
soak:  ## chaos soak for DURATION (120, 30m, 1h...): checker verdict + report with PNG plots in REPORT; FAULTS=kind,... to choose faults
	PYTHONPATH=$(CURDIR) .venv/bin/python -m bench.soak --duration $(DURATION) --report $(REPORT) $(if $(FAULTS),--faults $(FAULTS))

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/deptry . && .venv/bin/mypy

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
