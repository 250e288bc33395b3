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

.PHONY: demo test install bench clean serve

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -n "$$COLDSTART_DATA_DIR" || echo "note: COLDSTART_DATA_DIR is unset; ml-100k is downloaded from GroupLens"
	$(VENV)/bin/coldstart run --dataset ml-100k --model $(DEMO_MODEL) --protocol cold_item --seed 1 $(if $(filter clcrec,$(DEMO_MODEL)),$(DEMO_SET),) --output $(DEMO_DIR) --overwrite

# Serve the demo run (make demo first) at http://127.0.0.1:8000/ (docs/serving.md). Writes need an API key: the
# COLDSTART_API_KEY variable, else a random key kept in $(DEMO_DIR)/serve/api-key (mode 600) and printed here.
serve: $(STAMP)
	@test -f $(DEMO_DIR)/model/config.json || { echo "no trained run in $(DEMO_DIR): run make demo first" >&2; exit 2; }
	@mkdir -p $(DEMO_DIR)/serve
	@test -n "$$COLDSTART_API_KEY" || test -s $(DEMO_DIR)/serve/api-key || \
		(umask 077; $(PY) -c "import secrets; print(secrets.token_urlsafe(24))" > $(DEMO_DIR)/serve/api-key)
	@test -n "$$COLDSTART_API_KEY" || echo "API key for writes (type it into the page): $$(cat $(DEMO_DIR)/serve/api-key)"
	$(VENV)/bin/coldstart serve $(DEMO_DIR) --port $(or $(PORT),8000) $(if $(COLDSTART_API_KEY),,--api-key-file $(DEMO_DIR)/serve/api-key)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_clcrec.py
	$(PY) benchmarks/bench_features.py --dataset ml-100k
	$(PY) benchmarks/bench_content_sim.py

clean:
	rm -rf $(VENV) runs .pytest_cache
