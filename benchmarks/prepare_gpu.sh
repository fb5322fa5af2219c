#!/usr/bin/env bash
# Run HERE, on the development machine, before the device call (see benchmarks/NOTES.md).
#
# The device machine has torch, einops, h5py, pyyaml and numpy but not pydantic or optuna (which
# `bench models` needs, on its embedded SQLite storage), and it cannot
# reach a package registry; ../shared beside the checkout does not travel either. This puts
# what `benchmarks/gpu_bench.sh` needs into .gpu/ (git-ignored through .git/info/exclude, never
# committed): wheels for Python 3.12 x86-64, and a copy of the read-only reference benchmark.
# Then: run(command="bash benchmarks/gpu_bench.sh", carry=[".gpu"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/.."
REF_SRC=${REF_SRC:-../shared/reference/ref_vivit_bench.py}
mkdir -p .gpu/whl
if [ -d .git ] && ! grep -qx '/.gpu/' .git/info/exclude 2>/dev/null; then
  echo '/.gpu/' >> .git/info/exclude
fi
# One version of each, pinned to what the tests ran with here (typer 0.29 vendors click).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  typing-extensions==4.15.0 typer==0.29.2 rich==15.0.0 annotated-doc==0.0.7 \
  optuna==5.1.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
cp "$REF_SRC" .gpu/ref_vivit_bench.py
ls -la .gpu .gpu/whl
du -sh .gpu
