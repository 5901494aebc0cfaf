# Sourced by scripts/gpu-check.sh: finds the CUDA toolkit that LibTorch's CMake config asks
# for (its CUDA part runs find_package(CUDAToolkit)), where nvcc need not be on PATH.
#
# In:  py (a python3 with torch), say/die functions. Out: cuda_root ("" when none),
#      cuda_args (CMake arguments), and cuda_root/bin on PATH.
# Looks at, in order: CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda, /usr/local/cuda-*
# (newest first), and the toolkit wheels beside torch (site-packages/nvidia/cu*, with nvcc
# from nvidia-cuda-nvcc). A toolkit is a folder with bin/nvcc and include/cuda_runtime_api.h.
cuda_root=""
cuda_args=()
cuda_candidates=()
[ -n "${CUDA_HOME:-}" ] && cuda_candidates+=("$CUDA_HOME")
[ -n "${CUDA_PATH:-}" ] && cuda_candidates+=("$CUDA_PATH")
if command -v nvcc >/dev/null; then cuda_candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"); fi
cuda_candidates+=(/usr/local/cuda)
for d in $(ls -d /usr/local/cuda-* 2>/dev/null | sort -V -r); do cuda_candidates+=("$d"); done
site="$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null || true)"
if [ -n "$site" ]; then
  for d in $(ls -d "$site"/nvidia/cu* 2>/dev/null | sort -V -r); do cuda_candidates+=("$d"); done
fi
for d in "${cuda_candidates[@]}"; do
  if [ -x "$d/bin/nvcc" ] && [ -e "$d/include/cuda_runtime_api.h" ]; then
    cuda_root="$(readlink -f "$d")"
    break
  fi
done
if [ -n "$cuda_root" ]; then
  export PATH="$cuda_root/bin:$PATH" CUDA_HOME="$cuda_root"
  cuda_args=(-DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc")
fi
