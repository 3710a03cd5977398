#!/usr/bin/env bash
# The accelerator run of issue 30 in one command (benchmarks/device/README.md):
#
#   bash benchmarks/device/run.sh [--dry-run] [--out DIR] [--omniglot-dir DIR] [--budget S]
#
# Installs the wheels carried in .whl/ (ml_collections and clu: the device image lacks them) into
# /tmp/siamese_jax_site, puts that on the path, then runs benchmarks/device/run.py with the same
# arguments. Output goes to $OUT (else benchmarks/device/out). PYTHON picks the interpreter
# (default python3, the image's); SIAMESE_JAX_WHEELS the wheel folder (default .whl).
set -u
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${SIAMESE_JAX_WHEELS:-.whl}
SITE=/tmp/siamese_jax_site
dry_run=0
out=${OUT:-benchmarks/device/out}
previous=
for arg in "$@"; do
  [ "$arg" = --dry-run ] && dry_run=1
  [ "$previous" = --out ] && out=$arg
  case $arg in --out=*) out=${arg#--out=} ;; esac
  previous=$arg
done
mkdir -p "$out"
log=$out/log.txt
: >"$log"

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" | tee -a "$log"
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl >>"$log" 2>&1; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    if [ $dry_run = 0 ]; then
      # Test subprocesses set their own PYTHONPATH: a .pth file in the image's site-packages
      # shows them the wheels too (the device machine is thrown away afterwards).
      purelib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      echo "$SITE" >"$purelib/siamese_jax_device_wheels.pth" 2>>"$log" ||
        echo "could not write $purelib/siamese_jax_device_wheels.pth" | tee -a "$log"
    fi
  else
    echo "wheel install failed (see $log); going on without it" | tee -a "$log"
  fi
else
  echo "no wheels in $WHEELS: using the packages already installed" | tee -a "$log"
fi

export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
exec "$PYTHON" -u benchmarks/device/run.py "$@"
