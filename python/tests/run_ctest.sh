#!/bin/sh
# ctest entry for the Python package: run its pytest suite against the shared
# library just built ($1), with the checkpoint tests' C helper ($2). Skips
# (exit 77) only when numpy/torch/pytest are missing from the interpreter.
lib="$1"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
if [ -z "$py" ] || ! "$py" -c "import numpy, torch, pytest" >/dev/null 2>&1; then
  echo "SKIP: numpy/torch/pytest not installed for ${py:-python3} (apt-get install python3-numpy python3-torch python3-pytest)"
  exit 77
fi
export LINATTN_LIBRARY="$lib"
[ -n "$2" ] && export LINATTN_CKPT_HELPER="$2"
cd "$here/.." && exec "$py" -m pytest -q -p no:cacheprovider tests
