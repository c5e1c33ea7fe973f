#!/usr/bin/env bash
# Diagnostic (docs/distill-t1 verdict): the T = 1 student of folds 4 and 2 trained again with --min-epochs 12,
# the same teachers, seed and weight; at the commit in /work/wt-m.
set -uo pipefail
cd /work/wt-m
PY=.venv/bin/python
for i in 4 2; do
  out=runs/distill-t1-min12/fold$i
  if [ ! -f $out/metadata.json ]; then
    resume=""; [ -d $out ] && resume=--resume
    echo "== $(date -u +%H:%M) training $out"
    $PY -m train --recipe recipes/default.toml --data ../shared/data/cxr-dev --seed 0 --folds 5 --fold $i --out $out $resume \
      --init-seed 4 --teacher runs/cv-ens/fold$i --teacher runs/cv-ens/fold$i-init1 --distill-temperature 1.0 --min-epochs 12 || exit 1
  fi
  [ -f $out-bundle/bundle.json ] || $PY -m convert $out --recipe recipes/default.toml --formats tflite_int8,tflite_int8_ptq,tflite_fp32 --out $out-bundle --force || [ $? -eq 3 ] || exit 1
  echo "== $(date -u +%H:%M) fold $i done"
done
echo "min12 done $(date -u)"
