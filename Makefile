# The two commands of the README's quick start, and a few conveniences.
#   make quick   set up .venv (first time only) and run the main job on embedded data
#   make test    set up .venv (first time only) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DWP := $(VENV)/bin/dwp
STAMP := $(VENV)/.dwp-installed
OUT ?= results/quick

.PHONY: quick test lint format setup clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh
	@touch $@

setup: $(STAMP)

quick: $(STAMP)
	$(DWP) data list
	$(DWP) data preview letters --out $(OUT)/letters.png
	$(DWP) data preview mnist5k --out $(OUT)/mnist5k.png

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
