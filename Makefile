# The two commands of the README's quick start, and a few conveniences.
#   make quick   set up .venv (first time only) and run the main job on embedded data
#   make test    set up .venv (first time only) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DWP := $(VENV)/bin/dwp
STAMP := $(VENV)/.dwp-installed
OUT ?= results/quick

.PHONY: quick test lint format docs setup clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh
	@touch $@

setup: $(STAMP)

# The README's main job: the whole pipeline in its quick preset (priors fitted to the shipped kernels
# of paper-protocol source nets; the classification, convergence and random-feature experiments on
# 5000 MNIST digits) and the report, OUT/report.md. Finished stages are skipped on a re-run.
quick: $(STAMP)
	$(DWP) data list
	$(DWP) reproduce --preset quick --out $(OUT)
	@sed -n '/^## Classification/,/^!\[/p' $(OUT)/report.md

test: $(STAMP)
	$(PY) -m pytest -q

# The documentation site: the CLI reference regenerated from the command, then mkdocs (strict:
# a broken link or a missing API reference fails) into site/.
docs: $(STAMP)
	$(PY) scripts/cli_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) results site .pytest_cache .ruff_cache
