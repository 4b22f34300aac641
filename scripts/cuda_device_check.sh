#!/usr/bin/env bash
# The CUDA backend's device checks in one go, for a GPU machine with CUDA and Go
# (e.g. the lent device: `bash .gpu/run.sh 'bash scripts/cuda_device_check.sh'`):
#   1. every CUDA test of ./kernels (the fused-attention cases in their own process,
#      so that a fault there cannot take the others down),
#   2. the GPT-2 training step variant by variant (TestCUDAProfileGPT2),
#   3. `troupe run` with `device: cuda` (TestCUDARunPretrain, beside the CPU),
#   4. troupe bench --device cuda --config gpt2 at B32 and B64 (JSON and tables
#      under $OUT, default /tmp/cuda-check).
# Exits non-zero when a test fails. `cuda_device_check.sh profile` runs step 2 only.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/cuda-check}
mkdir -p "$out"
# kernels/cuda/cu13shim adapts gorgonia.org/cu to CUDA 13 (a no-op before it).
export CGO_CFLAGS="-I$PWD/kernels/cuda/cu13shim ${CGO_CFLAGS:-}"
tags=cuda
[ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || tags=cuda,purego
# `go test -c` looks for the vet tool even with -vet=off; a trimmed toolchain
# (the device's) may lack it.
tooldir=$(go env GOTOOLDIR)
if [ ! -e "$tooldir/vet" ]; then
  printf '#!/bin/sh\ncase "$1" in -V=full) echo "vet version %s";; esac\nexit 0\n' "$(go env GOVERSION)" > "$tooldir/vet"
  chmod +x "$tooldir/vet"
fi
go test -vet=off -tags "$tags" -c -o "$out/kernels.test" ./kernels || exit 1
if [ "${1:-}" = profile ]; then
  TROUPE_CUDA_PROFILE=1 "$out/kernels.test" -test.run 'CUDAProfileGPT2$' -test.v 2>&1 | tee "$out/profile.log"
  exit "${PIPESTATUS[0]}"
fi
(go build -tags "$tags" -o "$out/troupe" ./cmd/troupe > "$out/build.log" 2>&1; echo "build rc=$?" >> "$out/build.log") &
rc=0
show='^(\s*--- |PASS|FAIL|ok|panic)|rror|cuda_.*go:[0-9]+'
"$out/kernels.test" -test.run CUDA -test.skip 'CUDAAttention$' -test.v > "$out/tests.log" 2>&1 || rc=1
grep -E "$show" "$out/tests.log" | grep -v 'set TROUPE'
"$out/kernels.test" -test.run 'CUDAAttention$' -test.v > "$out/attention.log" 2>&1 || rc=1
grep -E "$show" "$out/attention.log"
TROUPE_CUDA_PROFILE=1 "$out/kernels.test" -test.run 'CUDAProfileGPT2$' -test.v > "$out/profile.log" 2>&1
grep -v '^=== ' "$out/profile.log" | head -80
wait
# `troupe run` with `device: cuda`: a tiny pretraining run on the GPU beside the same on the CPU
go test -vet=off -tags "$tags" -count=1 -run 'CUDARun' -v ./cmd/troupe > "$out/run.log" 2>&1 || rc=1
grep -E "$show|loss gpu" "$out/run.log"
cat "$out/build.log"
if [ -x "$out/troupe" ]; then
  "$out/troupe" bench --device cuda --config gpt2 --torch off --out "$out/bench32" 2>&1 | grep -E '^\|'
  "$out/troupe" bench --device cuda --config gpt2 --torch off --batch 64 --out "$out/bench64" 2>&1 | grep -E '^\| train'
fi
exit $rc
