#!/usr/bin/env bash
# Sets up siamese_jax on a fresh Debian machine with Python 3.11: a virtual environment in .venv
# with the pinned requirements and siamese_jax installed editable, and (as root, when apt is
# there) Debian's full Fashion-MNIST.
#   bash scripts/install.sh          runtime only
#   bash scripts/install.sh --dev    runtime and test requirements
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# siamese_jax itself, editable (pyproject.toml): `import siamese_jax` works in .venv from any folder
.venv/bin/python -m pip install -q --no-deps -e .
if [[ "${1:-}" == "--dev" ]]; then
  .venv/bin/python -m pip install -q -r requirements-dev.txt
fi
# Full Fashion-MNIST from Debian (optional: without it the embedded MNIST sample is used offline).
if [[ ! -d /usr/share/datasets/fashion-mnist ]] && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "note: could not install Debian's dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
fi
