#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment and install dwp with its dev tools, the
# docs tools and Ray (DWP_EXTRAS=dev for a lighter environment).
#
# PyTorch: where a CPU build of torch lies on local disk (pip's find-links, as on the project's
# build machines), it is installed from there first, which takes seconds; everywhere else pip
# resolves torch from the package index as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    # --no-index: look only at local wheels (a machine without one falls through at once);
    # torch's own dependencies then come from the index with the project's.
    if "${PIP[@]}" install --no-index --no-deps "torch==2.13.0" 2>/dev/null; then
        echo "bootstrap: torch 2.13.0 (CPU build) from local disk"
        "${PIP[@]}" install "torch==2.13.0"
    else
        echo "bootstrap: no local torch wheel; torch comes from the package index"
    fi
fi
# the extras: dev tools, the docs site's, and Ray for `--executor ray` (its tests run in `make test`)
"${PIP[@]}" install -e ".[${DWP_EXTRAS:-dev,docs,ray}]"
echo "bootstrap: ready ($("$VENV/bin/dwp" --version))"
