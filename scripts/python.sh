#!/usr/bin/env bash
# Builds the `castle` wheel with maturin (abi3: one wheel for CPython 3.10 and later),
# installs it into a fresh virtualenv and runs the pytest suite against the installed
# package, not the source tree, so a packaging mistake fails here; then checks the type
# stubs against the installed module with mypy.stubtest, and type-checks the tests and
# the example against the stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# The build tools, kept between runs.
tools=target/py-venv
if [[ ! -x $tools/bin/python ]]; then
  python3 -m venv "$tools"
fi
"$tools/bin/python" -m pip install --quiet --upgrade pip
"$tools/bin/python" -m pip install --quiet "maturin>=1.8,<2"

# The dev profile: the same build the Rust suites made, so no second compile; a
# release wheel is `maturin build --release` (README).
wheels=$root/target/wheels
rm -rf "$wheels"
(cd castle-py && "$root/$tools/bin/maturin" build --quiet --locked --profile dev --out "$wheels")
wheel=$(ls "$wheels"/castle-*.whl)
if [[ $(wc -l <<<"$wheel") -ne 1 || $wheel != *-cp310-abi3-* ]]; then
  echo "expected one abi3 wheel for CPython 3.10+, got: $wheel" >&2
  exit 1
fi

# A clean environment holding the wheel and the test tools only.
venv=target/py-wheel-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "$wheel" "pytest>=8" "mypy>=1.11"
# The tests must import the installed package, never castle-py/python.
(cd /tmp && "$root/$venv/bin/python" -c '
import castle, pathlib, sys
where = pathlib.Path(castle.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, f"castle imported from {where}"
print(f"testing the installed package {where.parent}")
')
"$venv/bin/python" -m pytest -q -p no:cacheprovider castle-py/tests
# `castle` covers its submodules, castle._castle included (naming both makes mypy
# see the stub twice).
"$venv/bin/python" -m mypy.stubtest castle --allowlist castle-py/stubtest-allowlist.txt
"$venv/bin/python" -m mypy --strict castle-py/python/castle castle-py/tests examples/notebook.py
