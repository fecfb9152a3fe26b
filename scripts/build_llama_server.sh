#!/usr/bin/env bash
# Build upstream llama.cpp's C++ `llama-server` from the llama.cpp source that the
# `llama-cpp-python` sdist on PyPI vendors, and cache the binary outside the clone.
#
#   scripts/build_llama_server.sh               build if missing, print the binary path
#   scripts/build_llama_server.sh --print-path  print where the binary lives (no build)
#   scripts/build_llama_server.sh --force       rebuild even if cached
#
# Cache: ${HANODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hanode}/llama-server/<sdist version>/
# HANODE_LLAMA_SERVER, if set, names an existing binary and skips the build.
# Takes about 11 minutes on 2 cores; the result is a ~15 MB static binary that
# needs only libgomp and libstdc++ at run time.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36" # pinned: bump it to pick up a newer llama.cpp
CACHE_ROOT="${HANODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hanode}"
DEST_DIR="$CACHE_ROOT/llama-server/$LLAMA_CPP_PYTHON_VERSION"
DEST="$DEST_DIR/llama-server"
JOBS="${HANODE_BUILD_JOBS:-2}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$HERE/../.venv/bin/python" ]]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi

force=0
case "${1:-}" in
    --print-path)
        if [[ -n "${HANODE_LLAMA_SERVER:-}" ]]; then echo "$HANODE_LLAMA_SERVER"; else echo "$DEST"; fi
        exit 0
        ;;
    --force) force=1 ;;
    "") ;;
    *) echo "usage: $0 [--print-path|--force]" >&2; exit 2 ;;
esac

if [[ -n "${HANODE_LLAMA_SERVER:-}" ]]; then
    if [[ -x "$HANODE_LLAMA_SERVER" ]]; then echo "$HANODE_LLAMA_SERVER"; exit 0; fi
    echo "HANODE_LLAMA_SERVER=$HANODE_LLAMA_SERVER is not an executable file" >&2
    exit 1
fi
if [[ $force -eq 0 && -x "$DEST" ]]; then
    echo "$DEST"
    exit 0
fi

# --- prerequisites: say exactly what is missing -------------------------------------
missing=()
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 ||
    missing+=("a C++17 compiler (apt-get install g++)")
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 ||
    missing+=("a C compiler (apt-get install gcc)")
"$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=("pip for $PYTHON (to download the sdist)")
if ! command -v cmake >/dev/null 2>&1; then
    if "$PYTHON" -m pip install --quiet cmake >/dev/null 2>&1 && [[ -x "$("$PYTHON" -c 'import sys,os;print(os.path.join(os.path.dirname(sys.executable),"cmake"))')" ]]; then
        PATH="$(dirname "$("$PYTHON" -c 'import sys;print(sys.executable)')"):$PATH"
    else
        missing+=("cmake >= 3.14 (apt-get install cmake, or pip install cmake)")
    fi
fi
if ! command -v ninja >/dev/null 2>&1; then
    if "$PYTHON" -m pip install --quiet ninja >/dev/null 2>&1; then
        PATH="$(dirname "$("$PYTHON" -c 'import sys;print(sys.executable)')"):$PATH"
    fi
    command -v ninja >/dev/null 2>&1 || missing+=("ninja (apt-get install ninja-build, or pip install ninja)")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "cannot build llama-server; missing:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 1
fi

# --- download + build in a temp dir outside the repo ---------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hanode-llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo ">> downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist into $WORK" >&2
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK/dl" >&2
tar -xzf "$WORK"/dl/llama_cpp_python-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)"
[[ -f "$SRC/CMakeLists.txt" ]] || { echo "no vendored llama.cpp in the sdist ($SRC)" >&2; exit 1; }

echo ">> configuring $SRC" >&2
start=$(date +%s)
cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
echo ">> building llama-server with -j $JOBS (about 11 minutes on 2 cores)" >&2
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >&2
echo ">> built in $(($(date +%s) - start)) s" >&2

BIN="$WORK/build/bin/llama-server"
[[ -x "$BIN" ]] || { echo "build finished but $BIN is missing" >&2; exit 1; }
"$BIN" --version >&2 || { echo "built llama-server does not run" >&2; exit 1; }

# --- atomic install into the cache ---------------------------------------------------
mkdir -p "$DEST_DIR"
cp "$BIN" "$DEST_DIR/.llama-server.tmp.$$"
chmod 755 "$DEST_DIR/.llama-server.tmp.$$"
mv -f "$DEST_DIR/.llama-server.tmp.$$" "$DEST"
echo "$DEST"
