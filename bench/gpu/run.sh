#!/usr/bin/env bash
# Issue #24's GPU verification, in one go, on a machine with an NVIDIA GPU,
# CUDA, a PyTorch >= 2 wheel (its LibTorch is what this builds against),
# CMake and Ninja; no package registry needed.
#
#   bench/gpu/run.sh [OUT_DIR]        (default: $OUT, else build-gpu/out)
#
# Steps, each logged to OUT_DIR/<step>.log; the first failure stops it:
#  1. preflight: a GPU (nvidia-smi), torch.cuda.is_available(), the wheel's
#     CMake package, the cxx11 ABI; exits 2 with what is missing otherwise;
#  2. the Debian build dependencies torch does not bring (gRPC, protobuf,
#     absl, OpenCV, ...), as .debs in bench/gpu/debs/ (bench/gpu/fetch-debs,
#     run on a Debian 12 machine beforehand; carried along) unpacked into a
#     prefix; skipped when IBLIP_GPU_PREFIX names a prefix already made;
#  3. the project built against the wheel's LibTorch (-DIBLIP_TORCH_PYTHON,
#     cmake/torch.cmake) into build-gpu/;
#  4. CUDA parity: the fixtures through the C++ runtime and engine on the
#     GPU (IBLIP_TEST_DEVICE=cuda): fp32 logits within 1e-4 of Hugging
#     Face's, greedy and beam ids identical; the paged-attention fallback and
#     the device candidates path; then bench/cuda_check.py (the packages
#     through PyTorch's own CUDA ops);
#  5. decode tok/s at 1, 16 and 64 concurrent sequences, medium LLaMA
#     (bench/benchmarks.py) and Vicuna-7B shapes (bench/large_model.py),
#     served with --runtime.device cuda; their BENCHMARKS.md sections go to
#     OUT_DIR/BENCHMARKS-gpu.md (merge them into BENCHMARKS.md by hand).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/build-gpu/out}}"
BUILD="$ROOT/build-gpu"
PYTHON="${IBLIP_GPU_PYTHON:-python3}"
mkdir -p "$OUT_DIR"
cd "$ROOT"

step() {  # step NAME COMMAND...: runs it, its output in OUT_DIR/NAME.log
  local name=$1; shift
  echo "== $name ($(date -u +%H:%M:%S))"
  if ! "$@" >"$OUT_DIR/$name.log" 2>&1; then
    echo "FAILED: $name (last lines of $OUT_DIR/$name.log):" >&2
    tail -30 "$OUT_DIR/$name.log" >&2
    exit 1
  fi
  tail -3 "$OUT_DIR/$name.log"
}

# 1. preflight ---------------------------------------------------------------
missing=()
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || missing+=("an NVIDIA GPU (nvidia-smi -L fails)")
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja)
if ! "$PYTHON" - <<'PY' 2>"$OUT_DIR/preflight.log"; then
import sys, torch, torch.utils
assert int(torch.__version__.split(".")[0]) >= 2, f"torch {torch.__version__} < 2"
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert torch.compiled_with_cxx11_abi(), "this wheel's LibTorch uses the old C++ ABI"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.utils.cmake_prefix_path)
PY
  missing+=("$PYTHON with a CUDA torch >= 2 (see $OUT_DIR/preflight.log)")
fi
if ((${#missing[@]})); then
  printf 'bench/gpu/run.sh: cannot run here; missing:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"

# 2. the Debian libraries, unpacked ------------------------------------------
PREFIX="${IBLIP_GPU_PREFIX:-$BUILD/prefix}"
if [[ -z "${IBLIP_GPU_PREFIX:-}" ]]; then
  debs=("$ROOT"/bench/gpu/debs/*.deb)
  [[ -e "${debs[0]}" ]] || { echo "no bench/gpu/debs/*.deb: run bench/gpu/fetch-debs on Debian 12 first" >&2; exit 2; }
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  for deb in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$PREFIX"
    else  # a .deb is an ar archive holding data.tar.xz (or .zst)
      member="$(ar t "$deb" | grep '^data\.tar')"
      case "$member" in
        *.xz) ar p "$deb" "$member" | tar -xJ -C "$PREFIX" ;;
        *.zst) ar p "$deb" "$member" | tar -x --zstd -C "$PREFIX" ;;
        *) ar p "$deb" "$member" | tar -x -C "$PREFIX" ;;
      esac
    fi
  done
fi
MULTIARCH=x86_64-linux-gnu
export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MULTIARCH:$PREFIX/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PREFIX/usr/bin:$PATH"
# The packages' .pc files say prefix=/usr: the sysroot puts them under PREFIX.
export PKG_CONFIG_PATH="$PREFIX/usr/lib/$MULTIARCH/pkgconfig:$PREFIX/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$PREFIX"

# 3. build against the wheel's LibTorch ---------------------------------------
step configure cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DIBLIP_TORCH_PYTHON="$(command -v "$PYTHON")" \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr;$PREFIX/usr/lib/$MULTIARCH/cmake" \
  -DCMAKE_LIBRARY_PATH="$PREFIX/usr/lib/$MULTIARCH" -DCMAKE_INCLUDE_PATH="$PREFIX/usr/include" \
  -DTORCH_PYTHON="$(command -v "$PYTHON")"  # exports the test packages with the wheel
step build cmake --build "$BUILD" -j "$(nproc)"

# 4. parity on the GPU ----------------------------------------------------------
export IBLIP_TEST_DEVICE=cuda IBLIP_FIXTURES_DIR="${IBLIP_FIXTURES_DIR:-$ROOT/tests/fixtures}"
step parity ctest --test-dir "$BUILD" -LE e2e --output-on-failure \
  -R 'FixtureParity|EngineParity|TorchEngine|InstructBlipModel|PagedAttention'
step cuda_check "$PYTHON" bench/cuda_check.py --fixtures "$IBLIP_FIXTURES_DIR" --out "$OUT_DIR/cuda_check.json"

# 5. decode throughput ------------------------------------------------------------
export IBLIP_BUILD_DIR="$BUILD"
for streams in 1 16 64; do
  step "medium-$streams" "$PYTHON" bench/benchmarks.py --families llama --dtypes bf16,fp32 \
    --repeats 1 --concurrency "$streams" --server-arg=--runtime.device=cuda \
    --json-out "$OUT_DIR/medium-$streams.json" --output "$OUT_DIR/BENCHMARKS-gpu.md"
done
step vicuna-7b "$PYTHON" bench/large_model.py --preset vicuna-7b --dtype bf16 --kv-cache-mib 16384 \
  --streams 64 --server-arg=--runtime.device=cuda \
  --json-out "$OUT_DIR/vicuna-7b.json" --output "$OUT_DIR/BENCHMARKS-gpu.md"
echo "done: $OUT_DIR"
