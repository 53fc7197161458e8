#!/usr/bin/env bash
# Recreate the Python reference environment used to generate knowlens' test
# fixtures (tools/make_*.py). Lives OUTSIDE the repo.
#
#   REFENV=/opt/refenv tools/setup_reference_env.sh      (default /opt/refenv)
#   PYTHON=python3.11  REFENV=$HOME/.venvs/knowlens-ref tools/setup_reference_env.sh
#
# llama-cpp-python is compiled from source (~10-15 min on 2 cores); set
# SKIP_LLAMA_CPP=1 to skip it (make_tiny_models.py and check_tiny_numpy.py do
# not need it). The exact resolved set is in tools/reference_env.lock.txt.
set -euo pipefail

REFENV="${REFENV:-/opt/refenv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$REFENV/bin/python" ]; then
    "$PYTHON" -m venv "$REFENV"
fi
PIP="$REFENV/bin/pip"

# Versions the committed fixtures were generated with (Python 3.11.7).
"$PIP" install \
    torch==2.15.0 \
    transformers==5.24.0 \
    tokenizers==0.23.3 \
    safetensors==0.8.0 \
    huggingface_hub==2.4.0 \
    accelerate==1.15.0 \
    gguf==0.19.0 \
    numpy==2.4.6 \
    sentencepiece==0.2.3 \
    protobuf==7.36.2 \
    Jinja2==3.1.6

# SAELens for tools/make_sae_fixtures.py and tools/check_saelens_load.py. Installed after the
# pins above, which its requirements accept unchanged (it adds transformer-lens, datasets, ...).
"$PIP" install sae-lens==6.54.12

if [ "${SKIP_LLAMA_CPP:-0}" != "1" ]; then
    # x86-64 build with explicit kernels (no -march=native), so results do not depend on the
    # build host's CPU flags beyond these: AVX-512 where this CPU has it (an AVX-512 build
    # dies with an illegal instruction on an AVX2-only CPU such as AMD Zen 3), else AVX2.
    if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then AVX512=ON; else AVX512=OFF; fi
    echo "llama.cpp: building with GGML_AVX512=$AVX512"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=$AVX512 -DGGML_FMA=ON -DGGML_F16C=ON}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        "$PIP" install --no-cache-dir llama-cpp-python==0.3.36
fi

"$REFENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers, numpy, tokenizers, safetensors
print("sae_lens", md.version("sae-lens"))
print("torch", torch.__version__, "transformers", transformers.__version__, "gguf", md.version("gguf"),
      "numpy", numpy.__version__, "tokenizers", tokenizers.__version__)
try:
    import llama_cpp
    print("llama_cpp", llama_cpp.__version__)
    print(llama_cpp.llama_print_system_info().decode())
except ImportError:
    print("llama_cpp not installed")
PY
echo "reference env ready: $REFENV"
