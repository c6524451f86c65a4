#!/usr/bin/env bash
# Builds the `castle` Python package with maturin into a project-local virtualenv,
# then runs its pytest suite and checks the type stubs with mypy.stubtest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py-venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "maturin>=1.8,<2" "pytest>=8" "mypy>=1.11"
venv_abs=$(cd "$venv" && pwd)
(cd castle-py && VIRTUAL_ENV="$venv_abs" PATH="$venv_abs/bin:$PATH" maturin develop --quiet --locked)
"$venv/bin/python" -m pytest -q castle-py/tests
"$venv/bin/python" -m mypy.stubtest castle._castle --allowlist castle-py/stubtest-allowlist.txt
