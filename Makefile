# Two entry points, both self-installing from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo
DEMO_MODEL ?= clcrec
# CLCRec's defaults are the settings chosen on ml-100k's validation split (docs/models/clcrec.md, issue 11); the demo
# adds the textual feature preset (MiniLM of title + genres; docs/features.md); clear it for other models.
DEMO_SET ?= --features textual
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
	$(VENV)/bin/coldstart run --dataset ml-100k --model $(DEMO_MODEL) --protocol cold_item --seed 1 $(if $(filter clcrec,$(DEMO_MODEL)),$(DEMO_SET),) --output $(DEMO_DIR) --overwrite

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_clcrec.py
	$(PY) benchmarks/bench_features.py --dataset ml-100k
	$(PY) benchmarks/bench_content_sim.py

clean:
	rm -rf $(VENV) runs .pytest_cache
