# Two entry points, both self-installing from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo
DEMO_MODEL ?= pop
# Offline machines: use the shared data beside the checkout when COLDSTART_DATA_DIR is not set.
export COLDSTART_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -n "$$COLDSTART_DATA_DIR" || echo "note: COLDSTART_DATA_DIR is unset; ml-100k is downloaded from GroupLens"
	$(VENV)/bin/coldstart run --dataset ml-100k --model $(DEMO_MODEL) --protocol cold_item --seed 1 --output $(DEMO_DIR) --overwrite

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
