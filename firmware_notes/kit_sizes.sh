#!/usr/bin/env bash
# Measure the kit's size for each device target, and show the error for a target without a wheel.
#   firmware_notes/kit_sizes.sh BUNDLE [OUT_DIR]     (needs PyPI; writes firmware_notes/kit_sizes.log)
#   PROJECT_WHEEL=cxr_edge-*.whl firmware_notes/kit_sizes.sh ...   to use a given project wheel
# The bundle must hold a model for each backend (e.g. tflite + onnx + openvino, `python -m convert ... --formats all`).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUNDLE="${1:?usage: $0 BUNDLE [OUT_DIR]}"
OUT="${2:-/var/tmp/cxr-kit-sizes}"
mkdir -p "$OUT"
exec > >(tee "$ROOT/firmware_notes/kit_sizes.log") 2>&1
echo "kit_sizes: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), bundle $(du -sh "$BUNDLE" | cut -f1) ($(ls "$BUNDLE" | grep -c model_) model files)"
echo
printf '%-44s %-18s %9s %7s  %s\n' "target" "backend" "MB" "wheels" "result"
kit() {  # label backend args...
    local label="$1" backend="$2"; shift 2
    local f="$OUT/kit-$(echo "$label" | tr -c 'a-zA-Z0-9.\n' '_')-$backend.tar.gz"
    rm -f "$f"
    local extra=()
    [ -z "${PROJECT_WHEEL:-}" ] || extra=(--project-wheel "$PROJECT_WHEEL")
    if msg=$("$PY" -m edge_runtime kit --bundle "$BUNDLE" --backend "$backend" --out "$f" "$@" "${extra[@]}" 2>&1); then
        printf '%-44s %-18s %9s %7s  ok\n' "$label" "$backend" "$(awk -v s="$(stat -c %s "$f")" 'BEGIN{printf "%.1f", s/1e6}')" \
            "$(tar tzf "$f" | grep -c '\.whl$')"
    else
        printf '%-44s %-18s %9s %7s  %s\n' "$label" "$backend" "-" "-" "$(echo "$msg" | grep '^error:' | cut -c1-160)"
    fi
    rm -f "$f"
}
kit "Raspberry Pi OS Bookworm (aarch64, py3.11)" litert --platform linux_aarch64 --python 3.11 --glibc 2.36
kit "Raspberry Pi OS Bookworm (aarch64, py3.11)" onnxruntime --platform linux_aarch64 --python 3.11 --glibc 2.36
kit "Raspberry Pi OS Bookworm (aarch64, py3.11)" openvino --platform linux_aarch64 --python 3.11 --glibc 2.36
kit "JetPack 6 (aarch64, py3.10), CPU onnxruntime" onnxruntime --platform linux_aarch64 --python 3.10 --glibc 2.35 --constraints none
kit "Debian 12 mini-PC (x86_64, py3.11)" openvino --platform linux_x86_64 --python 3.11 --glibc 2.36
kit "Debian 12 mini-PC (x86_64, py3.11)" litert --platform linux_x86_64 --python 3.11 --glibc 2.36
echo
echo "expected failures (no wheel for the target):"
kit "aarch64 glibc 2.31 (Ubuntu 20.04), py3.11" openvino --platform linux_aarch64 --python 3.11 --glibc 2.31
kit "JetPack 6 (aarch64, py3.10), project pins" onnxruntime --platform linux_aarch64 --python 3.10 --glibc 2.35
