#!/usr/bin/env bash
# seqpipe's GPU checks in one run, for a machine with a CUDA GPU:
#   1. the CUDA tests in full fp32 (NVIDIA_TF32_OVERRIDE=0: CPU and CUDA may differ by rounding alone),
#   2. the same tests with each library's TF32 defaults (the looser CUDA tolerance in tests/test_runtime.py),
#   3. the serving benchmark on CUDA, both sides in full fp32.
# Needs torch built with CUDA, onnxruntime-gpu, and seqpipe installed with its test extra
# (pip install -e '.[test]'). Logs and the benchmark table go to OUTDIR (default: cuda-check/).
#
#   bash benchmarks/cuda_check.sh [OUTDIR] [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=cuda-check
quick=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    -*) echo "cuda_check: unknown option $arg; usage: bash benchmarks/cuda_check.sh [OUTDIR] [--quick]" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
mkdir -p "$out"

# refuse at once, in one line, when this machine cannot run the checks (the tests would only skip)
python - <<'EOF' || exit 2
import sys

try:
    import onnxruntime as ort
    import torch

    from seqpipe.serving import runtime
except ImportError as exc:
    sys.exit(f"cuda_check: cannot import {exc.name}; install seqpipe with pip install -e '.[test]', and onnxruntime-gpu.")
if not torch.cuda.is_available():
    sys.exit(f"cuda_check: torch {torch.__version__} sees no CUDA GPU; install a CUDA build of torch on a GPU machine.")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit(f"cuda_check: onnxruntime {ort.__version__} has no CUDA provider; install onnxruntime-gpu.")
if not runtime.cuda_usable():
    sys.exit("cuda_check: onnxruntime could not start its CUDA provider (it needs the CUDA 13 and cuDNN 9 libraries).")
print(f"cuda_check: torch {torch.__version__} on {torch.cuda.get_device_name()}, onnxruntime {ort.__version__}")
EOF

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
failed=()
NVIDIA_TF32_OVERRIDE=0 python -m pytest -m cuda -rs -p no:cacheprovider tests 2>&1 | tee "$out/pytest-cuda-fp32.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("CUDA tests in fp32")
python -m pytest -m cuda -rs -p no:cacheprovider tests 2>&1 | tee "$out/pytest-cuda-tf32-defaults.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("CUDA tests with TF32 defaults")
if grep -q "SKIPPED" "$out/pytest-cuda-fp32.log"; then
  failed+=("CUDA tests skipped on a GPU machine")
fi
NVIDIA_TF32_OVERRIDE=0 python benchmarks/serving.py --device cuda "${quick[@]}" 2>&1 | tee "$out/serving-cuda.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("CUDA benchmark")

if [ "${#failed[@]}" -gt 0 ]; then
  echo "cuda_check: FAILED: $(IFS=';'; echo "${failed[*]}"); logs in $out/" >&2
  exit 1
fi
echo "cuda_check: passed; logs and the benchmark table in $out/"
