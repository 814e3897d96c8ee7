#!/usr/bin/env sh
# Build the fake NVML library: tests/fake_nvml/build.sh OUTDIR -> OUTDIR/libnvidia-ml.so.1 (a few seconds).
# Put OUTDIR on LD_LIBRARY_PATH and name a spec in FAKE_NVML_SPEC (see fake_nvml.c).
set -eu
out="${1:?usage: build.sh OUTDIR}"
here="$(cd "$(dirname "$0")" && pwd)"
cc="${CC:-cc}"
mkdir -p "$out"
# -fvisibility=hidden: only the NVML entry points are exported, as from the real library.
"$cc" -std=c11 -O2 -g -Wall -Wextra -shared -fPIC -fvisibility=hidden -pthread \
    -Wl,-soname,libnvidia-ml.so.1 -o "$out/libnvidia-ml.so.1.tmp" "$here/fake_nvml.c"
mv -f "$out/libnvidia-ml.so.1.tmp" "$out/libnvidia-ml.so.1"
