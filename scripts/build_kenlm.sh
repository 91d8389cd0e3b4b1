#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary from the PyPI `kenlm` source distribution (its lm/builder
# sources) with cmake + Debian Boost. Cached: a rerun with the binaries present returns at once.
#   KENLM_DIR (default ~/.cache/asr/kenlm) receives bin/lmplz and bin/build_binary;
#   asr.lm finds them there (or on PATH, or via $ASR_KENLM_BIN).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
VERSION=${KENLM_VERSION:-0.3.0}
DIR=${KENLM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/asr/kenlm}
PY=${PYTHON:-python3}
if [ -x "$DIR/bin/lmplz" ] && [ -x "$DIR/bin/build_binary" ]; then
  echo "[kenlm] cached: $DIR/bin"; exit 0
fi
APT=(cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
     libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
apt_ensure kenlm "${APT[@]}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# `pip download` of an sdist prepares its metadata, which needs `wheel` without build isolation
$PY -c 'import wheel' 2>/dev/null || $PY -m pip install -q wheel
$PY -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" "kenlm==$VERSION"
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm*' | head -1)
log="$work/build.log"
if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
       && cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)"; } >"$log" 2>&1; then
  tail -n 40 "$log"; echo "[kenlm] build failed" >&2; exit 1
fi
mkdir -p "$DIR/bin.tmp"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$DIR/bin.tmp/"
rm -rf "$DIR/bin" && mv "$DIR/bin.tmp" "$DIR/bin"     # appears complete or not at all
echo "[kenlm] built: $DIR/bin"
