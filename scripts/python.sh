#!/usr/bin/env bash
# Builds the `castle` Python package with maturin into a project-local virtualenv,
# then runs its pytest suite, checks the type stubs against the built module with
# mypy.stubtest, and type-checks the tests and the example against the stubs.
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
# `castle` covers its submodules, castle._castle included (naming both makes mypy
# see the stub twice).
"$venv/bin/python" -m mypy.stubtest castle --allowlist castle-py/stubtest-allowlist.txt
"$venv/bin/python" -m mypy --strict castle-py/python/castle castle-py/tests examples/notebook.py
