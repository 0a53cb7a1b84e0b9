#!/usr/bin/env bash
# Fetch Triton's perf_analyzer (C++ binary) into $1 (default .cache/perf_analyzer) and write a wrapper there.
# tritonclient 2.50.0 is the newest wheel that still ships the binary and runs on Debian 12's glibc; it needs
# libb64 (a Debian package, unpacked without installing) and libcudart.so.12 (only loaded, never used on CPU).
set -euo pipefail
PIP=$(cd "$(dirname "${PIP:-.venv/bin/pip}")" && pwd)/$(basename "${PIP:-.venv/bin/pip}")
OUT=${1:-.cache/perf_analyzer}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$OUT"
"$PIP" download -q --no-deps -d wheels 'tritonclient==2.50.0' --platform manylinux1_x86_64 --only-binary=:all:
"$PIP" download -q --no-deps -d wheels 'nvidia-cuda-runtime-cu12==12.9.79'
python3 -m zipfile -e wheels/tritonclient-2.50.0-*.whl unpacked
python3 -m zipfile -e wheels/nvidia_cuda_runtime_cu12-*.whl unpacked
(cd wheels && apt-get download -q libb64-0d >/dev/null 2>&1) || python3 -c "import urllib.request as u; \
u.urlretrieve('http://deb.debian.org/debian/pool/main/libb/libb64/libb64-0d_1.2-5+b1_amd64.deb', \
'wheels/libb64-0d_1.2-5+b1_amd64.deb')"
dpkg -x wheels/libb64-0d_*.deb unpacked
chmod +x unpacked/tritonclient-2.50.0.data/data/bin/perf_analyzer
cat > perf_analyzer <<WRAPPER
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$OUT/unpacked/usr/lib/x86_64-linux-gnu:$OUT/unpacked/nvidia/cuda_runtime/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$OUT/unpacked/tritonclient-2.50.0.data/data/bin/perf_analyzer" "\$@"
WRAPPER
chmod +x perf_analyzer
./perf_analyzer --version >/dev/null 2>&1 || ./perf_analyzer --help 2>&1 | head -3
echo "perf_analyzer ready: $OUT/perf_analyzer"
