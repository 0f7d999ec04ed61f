#!/usr/bin/env bash
# Create the virtual environment with hear-gram, the HEAR tool chain and the test tools.
# Usage: scripts/setup.sh [VENV_DIR] [PYTHON]
set -euo pipefail
venv=${1:-.venv}
python=${2:-python3}
cd "$(dirname "$0")/.."
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torchaudio stops at 2.11 on PyPI and needs the matching torch: install the pair first.
"${pip[@]}" torch==2.11.0 torchaudio==2.11.0
"${pip[@]}" -e ".[hear,train,test,docs]"
# heareval and hearvalidator pin numpy 1.19 and numba 0.48 (no Python 3.11 builds); their
# real dependencies come with the [hear] extra, so install them without theirs.
"${pip[@]}" --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
