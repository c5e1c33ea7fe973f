#!/usr/bin/env bash
# docs/distill-t1/PLAN.md, folds 2 and 4: the teachers (the served recipe's two trainings), their pair bundle, then
# the T = 1 student; run in a checkout at 2d6095a (the code that trained folds 0, 1, 3). Resumes each training.
set -uo pipefail
cd "$(dirname "$0")/../wt-m" || exit 1
PY=.venv/bin/python
R="--recipe recipes/default.toml --data ../shared/data/cxr-dev --seed 0 --folds 5"
F=tflite_int8,tflite_int8_ptq,tflite_fp32
train() {  # out, extra flags...
  local out=$1; shift
  [ -f "$out/metadata.json" ] && { echo "== $out done"; return 0; }
  local resume=""; [ -d "$out" ] && resume=--resume
  echo "== $(date -u +%H:%M) training $out $resume $*"
  $PY -m train $R --out "$out" $resume "$@" || { echo "FAILED $out"; exit 1; }
}
conv() {  # out-bundle, run, extra...
  local b=$1; shift
  [ -f "$b/bundle.json" ] && { echo "== $b done"; return 0; }
  echo "== $(date -u +%H:%M) converting $b"
  $PY -m convert "$@" --recipe recipes/default.toml --formats $F --out "$b" --force || [ $? -eq 3 ] || { echo "FAILED $b"; exit 1; }
}
for i in ${FOLDS:-2 4}; do
  train runs/cv-ens/fold$i --fold $i
  train runs/cv-ens/fold$i-init1 --fold $i --init-seed 1
  conv runs/cv-ens/fold$i-bundle runs/cv-ens/fold$i --member runs/cv-ens/fold$i-init1
  train runs/distill-t1/fold$i --fold $i --init-seed 4 --teacher runs/cv-ens/fold$i --teacher runs/cv-ens/fold$i-init1 --distill-temperature 1.0
  conv runs/distill-t1/fold$i-bundle runs/distill-t1/fold$i
  echo "== $(date -u +%H:%M) fold $i done"
done
echo "distill-t1 folds ${FOLDS:-2 4} done $(date -u)"
