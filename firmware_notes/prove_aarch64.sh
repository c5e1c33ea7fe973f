#!/usr/bin/env bash
# Release check (not part of `make test`): prove the offline kit on aarch64 without an aarch64 machine.
#
#   sudo firmware_notes/prove_aarch64.sh --bundle BUNDLE [--backend litert] [--work /var/tmp/cxr-arm64]
#                                        [--project-wheel cxr_edge-*.whl]   (default: built from this checkout)
#
# 1. builds the kit for linux_aarch64 / CPython 3.11 (Raspberry Pi OS Bookworm) with this workstation's
#    `python -m edge_runtime kit`, whose self-test samples are, for a synthetic demo model, a few phantoms
#    (PNG 8/16-bit, JPEG, DICOM from `python -m train.phantom`), and for a model trained on real data the
#    real validation films the kit builder picks (2 per class from the run's split.csv); the kit builder
#    records their probabilities on this x86 machine (and refuses a model too sensitive to rounding);
# 2. makes an arm64 Debian bookworm userland with debootstrap (once; kept in --work) and copies it afresh;
# 3. inside it, under qemu user-mode emulation (binfmt_misc) and with NO network (a new, empty network
#    namespace), runs the kit's install.sh as root: checksums, venv, pip --no-index, bundle, self-test
#    (aarch64 probabilities vs the x86 ones), systemd unit and service user (systemd itself does not run in
#    a chroot, so the unit is written, not started);
# 4. classifies the images again with `python -m edge_runtime classify` inside the userland and prints a
#    per-image comparison with the x86 run.
# Needs root, a Debian/Ubuntu host with apt (qemu-user-static, debootstrap, binfmt-support are installed if
# missing), network for the Debian mirror and PyPI on the host side only. Takes 5-15 minutes.
# Output goes to the terminal and to firmware_notes/prove_aarch64_<backend>.log (with the date).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUNDLE=""
BACKEND=litert
WORK=/var/tmp/cxr-arm64
LOG=""
MIRROR=http://deb.debian.org/debian
KIT_ARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="$2"; shift 2 ;;
        --backend) BACKEND="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --log) LOG="$2"; shift 2 ;;
        --mirror) MIRROR="$2"; shift 2 ;;
        --project-wheel) KIT_ARGS+=(--project-wheel "$2"); shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
LOG="${LOG:-$ROOT/firmware_notes/prove_aarch64_$BACKEND.log}"
[ -n "$BUNDLE" ] || { echo "usage: $0 --bundle BUNDLE [--backend litert|onnxruntime|openvino]" >&2; exit 2; }
BUNDLE="$(cd "$BUNDLE" && pwd)"
[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, chroot, binfmt_misc)" >&2; exit 2; }
mkdir -p "$WORK"
exec > >(tee "$LOG") 2>&1

t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 )) s] $*"; }
fail() { echo; echo "RESULT: FAILED - $*"; exit 1; }

echo "prove_aarch64: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host: $(uname -srm), $(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) cores"
echo "repo: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -z "$(git -C "$ROOT" status --porcelain -- edge_runtime firmware_notes ':(exclude)firmware_notes/*.log' 2>/dev/null)" ] || echo ' (+ uncommitted changes in edge_runtime/ or firmware_notes/)')"
echo "bundle: $BUNDLE ($(ls "$BUNDLE" | tr '\n' ' '))"
echo "backend: $BACKEND"
echo "project wheel: ${KIT_ARGS[1]:-built from this checkout by the kit command}"

step "host tools: qemu-user-static, debootstrap, binfmt-support"
if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap binfmt-support >/dev/null
fi
echo "$(/usr/bin/qemu-aarch64-static --version | head -n 1); debootstrap $(dpkg-query -W -f '${Version}' debootstrap)"
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || fail "binfmt_misc cannot be mounted here (a container without CAP_SYS_ADMIN?): aarch64 binaries cannot run"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 \
    || fail "cannot register qemu-aarch64 with binfmt_misc"
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || fail "binfmt qemu-aarch64 is registered but disabled"
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || fail "binfmt qemu-aarch64 lacks the F flag (interpreter not usable inside a chroot)"
echo "binfmt_misc: qemu-aarch64 $(sed -n 's/^flags: //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"

BASE="$WORK/rootfs"
step "arm64 Debian bookworm userland ($BASE)"
if [ ! -e "$BASE/.cxr-debootstrap-done" ]; then
    rm -rf "$BASE"
    debootstrap --arch=arm64 --variant=minbase --include=python3 bookworm "$BASE" "$MIRROR" \
        > "$WORK/debootstrap.log" 2>&1 || fail "debootstrap failed, see $WORK/debootstrap.log"
    touch "$BASE/.cxr-debootstrap-done"
fi
echo "$(chroot "$BASE" uname -m), $(chroot "$BASE" /usr/bin/python3 -c 'import platform; print("Python", platform.python_version(), "glibc", platform.libc_ver()[1])')"
chroot "$BASE" /usr/bin/python3 -c 'import ensurepip' 2>/dev/null \
    && echo "(python3-venv present)" || echo "(no python3-venv/ensurepip: install.sh must not need it)"

IMAGES="$WORK/images"
rm -rf "$IMAGES"
SYNTHETIC="$("$PY" -c 'import json, sys; print(int(bool(json.load(open(sys.argv[1])).get("synthetic"))))' "$BUNDLE/metadata.json")"
SAMPLES=()
if [ "$SYNTHETIC" = 1 ]; then
step "sample images: synthetic phantoms (PNG 8/16-bit, JPEG, DICOM) for a synthetic demo model"
"$PY" -m train.phantom --out "$IMAGES" --per-class 20 --seed 7 --min-size 160 --max-size 320 >/dev/null
# every class, every file type: per class the first DICOM (if any), JPEG, 8-bit PNG and 16-bit PNG
PICK='import sys, cv2
from pathlib import Path
for cls in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    kinds = {}
    for f in sorted(cls.iterdir()):
        png16 = f.suffix == ".png" and cv2.imread(str(f), cv2.IMREAD_UNCHANGED).dtype.itemsize == 2
        kinds.setdefault("png16" if png16 else f.suffix, f)
    print("\n".join(str(f) for f in kinds.values()))'
mapfile -t IMGS < <("$PY" -c "$PICK" "$IMAGES")
echo "${#IMGS[@]} images: $(for f in "${IMGS[@]}"; do basename "$f"; done | tr '\n' ' ')"
for f in "${IMGS[@]}"; do SAMPLES+=(--sample "$f"); done
else
    step "sample images: a model trained on real data, so the kit builder picks real validation films"
fi

step "build the kit for linux_aarch64 / Python 3.11 on this $(uname -m) workstation"
KIT_TGZ="$WORK/cxr-edge-kit-aarch64-$BACKEND.tar.gz"
rm -f "$KIT_TGZ"
"$PY" -m edge_runtime kit --bundle "$BUNDLE" --platform linux_aarch64 --python 3.11 --glibc 2.36 \
    --backend "$BACKEND" --out "$KIT_TGZ" "${SAMPLES[@]}" "${KIT_ARGS[@]}" 2>&1 | grep -v 'XNNPACK' || fail "kit build failed"
echo "kit: $(du -h "$KIT_TGZ" | cut -f1) ($(stat -c %s "$KIT_TGZ") bytes)"
if [ "$SYNTHETIC" != 1 ]; then  # the CLI comparison below uses the films the kit chose
    mkdir -p "$IMAGES"
    tar xzf "$KIT_TGZ" -C "$IMAGES" --wildcards '*/selftest/samples/*' --strip-components 3
    mapfile -t IMGS < <(ls -d "$IMAGES"/*)
    echo "${#IMGS[@]} images: $(for f in "${IMGS[@]}"; do basename "$f"; done | tr '\n' ' ')"
fi

RT_BACKEND="$BACKEND"; [ "$BACKEND" = onnxruntime-gpu ] && RT_BACKEND=onnxruntime
step "x86 reference with the CLI (python -m edge_runtime classify)"
HAS_CLI=0
if "$PY" -m edge_runtime classify --help 2>/dev/null | grep -q -- --bundle; then
    HAS_CLI=1
    "$PY" -m edge_runtime classify "${IMGS[@]}" --bundle "$BUNDLE" --backend "$RT_BACKEND" --csv "$WORK/x86.csv" >/dev/null 2>&1 \
        || fail "x86 classify failed"
    echo "wrote $WORK/x86.csv"
else
    echo "(no classify command in this checkout yet: the self-test comparison below is the check)"
fi

step "fresh copy of the userland; copy the kit and the images in"
RUN="$WORK/run-rootfs"
cleanup() {
    for m in "$RUN/proc" "$RUN/sys" "$RUN/dev"; do mountpoint -q "$m" && umount -l "$m" || true; done
}
trap cleanup EXIT
cleanup
rm -rf "$RUN"
cp -a "$BASE" "$RUN"
mkdir -p "$RUN/root/kit" "$RUN/root/images"
tar xzf "$KIT_TGZ" -C "$RUN/root/kit"
KIT_IN=/root/kit/$(ls "$RUN/root/kit")
cp "${IMGS[@]}" "$RUN/root/images/"
mount -t proc proc "$RUN/proc"
mount --bind /dev "$RUN/dev"
# /sys is left out on purpose: with the host's (x86) /sys/devices/system/cpu, LiteRT's cpuinfo under qemu
# mis-detects the CPU and XNNPACK crashes (SIGSEGV, seen 2026-11-28). Without it cpuinfo prints three
# harmless "Error in cpuinfo" lines and falls back to safe defaults.

step "install offline inside arm64 Debian (qemu user-mode, no network namespace): sudo ./install.sh"
# a new network namespace: only loopback (brought up with the host's `ip`), no route out
in_arm() {
    unshare --net /bin/sh -c 'ip link set lo up && exec chroot "$0" "$@"' "$RUN" \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
in_arm /bin/sh -c 'python3 -c "import socket; socket.create_connection((\"151.101.0.223\", 443), 3)" 2>/dev/null \
    && echo "WARNING: network reachable" || echo "network: unreachable (as on a clinic device)"'
ti=$(date +%s)
in_arm /bin/bash "$KIT_IN/install.sh" </dev/null || fail "install.sh failed inside the arm64 userland"
echo "install.sh took $(( $(date +%s) - ti )) s under emulation"
echo "service unit written:"; sed -n '/^ExecStart/p;/^User/p' "$RUN/etc/systemd/system/cxr-edge.service"
in_arm id cxr-edge

step "self-test again, recording aarch64 probabilities"
in_arm /opt/cxr-edge/venv/bin/python /opt/cxr-edge/selftest/selftest.py --bundle /opt/cxr-edge/bundle \
    --expected /opt/cxr-edge/selftest/expected.json --json /root/arm.json || SELFTEST_FAILED=1
cp "$RUN/root/arm.json" "$WORK/arm_selftest.json"

step "the service's command as the service user, on loopback: /healthz and one screening through the API"
SMOKE='import json, sys, time, urllib.request, uuid
base = "http://127.0.0.1:8099"
import os
for _ in range(180):
    try:
        health = json.load(urllib.request.urlopen(base + "/healthz", timeout=5)); break
    except OSError:
        try:
            os.kill(int(sys.argv[2]), 0)
        except OSError:
            sys.exit("the server exited (its log follows)")
        time.sleep(1)
else:
    sys.exit("the page did not answer within 180 s")
print("healthz:", json.dumps(health))
img = open(sys.argv[1], "rb").read()
b = uuid.uuid4().hex
body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n").encode() + img + f"\r\n--{b}--\r\n".encode()
req = urllib.request.Request(base + "/api/v1/screenings", body, {"Content-Type": f"multipart/form-data; boundary={b}"})
r = json.load(urllib.request.urlopen(req, timeout=120))
print("POST /api/v1/screenings ->", {k: r[k] for k in ("decision", "label", "probs") if k in r})'
FIRST_IMG="/root/images/$(basename "${IMGS[0]}")"
in_arm /bin/bash -c '
fmt=$(sed -n "s|^ExecStart=.* --format \([a-z0-9_]*\) .*|--format \1|p" /etc/systemd/system/cxr-edge.service)
runuser -u cxr-edge -- /opt/cxr-edge/venv/bin/python -I -m edge_runtime serve --bundle /opt/cxr-edge/bundle \
    --backend "$1" $fmt --host 127.0.0.1 --port 8099 --data-dir /var/lib/cxr-edge >/tmp/serve.log 2>&1 &
pid=$!
python3 -c "$2" "$3" $pid; rc=$?
kill $pid 2>/dev/null; wait $pid 2>/dev/null
[ $rc = 0 ] || tail -20 /tmp/serve.log
exit $rc' _ "$RT_BACKEND" "$SMOKE" "$FIRST_IMG" \
    || SERVE_FAILED=1

if [ "$HAS_CLI" = 1 ]; then
    step "classify with the CLI inside arm64; compare with the x86 CSV"
    in_arm /bin/sh -c "cd /root/images && /opt/cxr-edge/venv/bin/python -I -m edge_runtime classify /root/images/* \
        --bundle /opt/cxr-edge/bundle --backend $RT_BACKEND --csv /root/arm.csv >/dev/null" || fail "classify failed inside arm64"
    cp "$RUN/root/arm.csv" "$WORK/arm.csv"
    "$PY" - "$WORK/x86.csv" "$WORK/arm.csv" <<'EOF' 
import csv, os, sys
def rows(p):
    with open(p, newline="") as fh:
        return {os.path.basename(r.get("path") or r.get("file") or r.get("name") or ""): r for r in csv.DictReader(fh)}
x86, arm = rows(sys.argv[1]), rows(sys.argv[2])
probs = [c for c in next(iter(x86.values())) if c.startswith("p_") or c.startswith("prob")]
worst = 0.0
for name in sorted(x86):
    a, b = x86[name], arm.get(name)
    if b is None:
        print(f"{name}: missing in the arm64 output"); worst = 1.0; continue
    d = max((abs(float(a[c]) - float(b[c])) for c in probs if a[c] and b[c]), default=0.0)
    worst = max(worst, d)
    print(f"{name:<40} x86 {a.get('decision', a.get('label'))!s:<13} arm64 {b.get('decision', b.get('label'))!s:<13} max|diff| {d:.1e}")
print(f"CLI: {len(x86)} images, probability columns {probs}, max |diff| x86 vs arm64 = {worst:.1e}")
agree = sum((x86[n].get("decision") or x86[n].get("label")) == (arm.get(n, {}).get("decision") or arm.get(n, {}).get("label")) for n in x86)
print(f"decisions agree on {agree}/{len(x86)} images")
EOF
fi

step "summary"
echo "kit: $KIT_TGZ, $(du -h "$KIT_TGZ" | cut -f1)"
"$PY" - "$WORK/arm_selftest.json" "$RUN/opt/cxr-edge/selftest/expected.json" <<'EOF'
import json, sys
d, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
# one entry per candidate artifact (a kit of one artifact, or an older one: the top level only)
expected = e.get("candidates") or {e.get("format") or e["model"]: e}
if e.get("rule"):
    print(f"  rule: {e['rule']}")
for key, got in d["candidates"].items():
    want, s = expected[key], got["samples"]
    ref = got.get("max_reference_diff")
    print(f"aarch64 self-test of {key} ({got['backend']}, {want['model']}): "
          f"{e.get('samples_text') or str(len(s)) + ' images'}")
    if ref is not None:
        print(f"  reference kernels (portable C++): max |arm64 - x86| = {ref:.1e} (exact: {ref <= 1e-6})")
    limit = want.get("drift_limit")
    print(f"  production kernels: max |p_arm64 - p_x86| = {got['max_abs_diff']:.3g}"
          + (f" (drift limit {limit:g})" if limit is not None else "") + "; decisions agree on "
          f"{sum(s[n]['decision'] == want['samples'][n]['decision'] for n in s)}/{len(s)}")
    if want.get("workstation_kernel_drift") is not None:
        print(f"  (on the x86 workstation itself, optimised vs reference kernels: max |diff| "
              f"{want['workstation_kernel_drift']:.3g})")
    print(f"  median latency under qemu {sorted(v['ms'] for v in s.values())[len(s) // 2]:.0f} ms "
          f"(emulated: says nothing about a real Pi)")
EOF
echo "elapsed: $(( $(date +%s) - t0 )) s"
[ -z "${SELFTEST_FAILED:-}" ] || fail "the aarch64 self-test did not match the x86 probabilities"
[ -z "${SERVE_FAILED:-}" ] || fail "the web page did not serve a screening inside arm64"
echo "RESULT: PASSED - installed offline on arm64 Debian bookworm (qemu): checksums, pip --no-index, bundle, self-test,"
echo "service user and unit, web page answered as that user; the x86/arm64 probability comparison is in the summary"
