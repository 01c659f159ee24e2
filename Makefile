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

# The quick configuration of the pipeline: 10 source nets of width 64/128 for 3 epochs on 10000
# rendered letters, their kernels, a prior per layer (the 5x5 one on 20000 kernels, few epochs);
# then a 7x7 prior on the shipped kernels of paper-protocol nets (data/kernels/letters-fconv);
# then two short Bayesian CNN runs on 50 MNIST digits (standard normal and deep weight prior),
# and a short convergence experiment (Xavier / DWP-sample / source-filter kernels, 2 seeds).
quick: $(STAMP)
	$(DWP) data list
	$(DWP) data preview letters --out $(OUT)/letters.png
	$(DWP) data preview mnist5k --out $(OUT)/mnist5k.png
	$(DWP) source train --dataset letters --nets 10 --hidden 64 128 --epochs 3 --n-train 10000 \
		--out $(OUT)/source
	$(DWP) kernels extract --source $(OUT)/source --out $(OUT)/kernels --max-kernels 20000
	$(DWP) kernels preview $(OUT)/kernels --out $(OUT)/kernels.png
	$(DWP) prior train --kernels $(OUT)/kernels/conv1 --out $(OUT)/prior-conv1
	$(DWP) prior train --kernels $(OUT)/kernels/conv2 --out $(OUT)/prior-conv2 --epochs 5
	$(DWP) prior eval --prior $(OUT)/prior-conv1 --kernels $(OUT)/kernels/conv1/test.npy \
		> $(OUT)/prior-conv1/eval.json
	$(DWP) prior eval --prior $(OUT)/prior-conv2 --kernels $(OUT)/kernels/conv2/test.npy \
		--iw-samples 20 > $(OUT)/prior-conv2/eval.json
	$(DWP) prior sample --prior $(OUT)/prior-conv1 --out $(OUT)/prior-conv1.png
	$(DWP) prior sample --prior $(OUT)/prior-conv2 --out $(OUT)/prior-conv2.png
	$(DWP) prior train --kernels data/kernels/letters-fconv/conv1 --out $(OUT)/prior-paper-conv1
	$(DWP) prior sample --prior $(OUT)/prior-paper-conv1 --out $(OUT)/prior-paper-conv1.png
	$(DWP) bnn train --prior normal --epochs 50 --eval-every 25 --out $(OUT)/bnn-normal
	$(DWP) bnn train --prior dwp --prior-dirs $(OUT)/prior-conv1 $(OUT)/prior-conv2 \
		--epochs 50 --eval-every 25 --out $(OUT)/bnn-dwp
	$(DWP) experiment convergence --prior-dirs $(OUT)/prior-conv1 $(OUT)/prior-conv2 \
		--seeds 0 1 --steps 50 --out $(OUT)/convergence
	@cat $(OUT)/prior-conv1/eval.json $(OUT)/prior-conv2/eval.json

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
