#!/usr/bin/env bash
# Fetches Triton's perf_analyzer for the client tests, once, into .tools/ at the repository
# root, and prints the path of a wrapper that runs it. The last tritonclient wheels that carry
# the binary are the 2.41 ones; it needs Debian's libb64 and the CUDA runtime library (from
# PyPI's nvidia-cuda-runtime-cu12: loaded, never used; no GPU is touched).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tools=${TOOLS_DIR:-$root/.tools}
wrapper=$tools/perf_analyzer

if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
    echo "$wrapper"
    exit 0
fi

if ! ldconfig -p | grep -q libb64.so.0d; then
    echo "get-perf-analyzer: installing libb64-0d" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq libb64-0d >&2
fi

rm -rf "$tools/pa"
mkdir -p "$tools/pa"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: \
    tritonclient==2.41.0 nvidia-cuda-runtime-cu12==12.9.79 -d "$download" >&2
python3 - "$download" "$tools/pa" <<'PY'
import glob, os, sys, zipfile
download, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(f"{download}/tritonclient-*.whl")[0]) as zf:
    with zf.open("tritonclient-2.41.0.data/data/bin/perf_analyzer") as src, open(f"{target}/perf_analyzer", "wb") as dst:
        dst.write(src.read())
os.chmod(f"{target}/perf_analyzer", 0o755)
with zipfile.ZipFile(glob.glob(f"{download}/nvidia_cuda_runtime_cu12-*.whl")[0]) as zf:
    with zf.open("nvidia/cuda_runtime/lib/libcudart.so.12") as src, open(f"{target}/libcudart.so.12", "wb") as dst:
        dst.write(src.read())
PY
cat > "$wrapper" <<SH
#!/bin/sh
LD_LIBRARY_PATH="$tools/pa\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$tools/pa/perf_analyzer" "\$@"
SH
chmod +x "$wrapper"
"$wrapper" --version >/dev/null 2>&1 || { echo "get-perf-analyzer: the binary does not run" >&2; exit 1; }
echo "$wrapper"
