#!/usr/bin/env bash
# Score docs/distill-t1's confirmation from a clean checkout of main (/work/main).
#   distill24-t1-score.sh fold I   : fold I's teachers' pair (saved) and its T = 1 student against it (saved)
#   distill24-t1-score.sh confirm  : folds 2 and 4 alone (the rule), then all five folds, from the saved files
set -euo pipefail
cd /work/main
test -z "$(git status --porcelain)" || { echo "main is not clean"; exit 1; }
PY=.venv/bin/python
D=docs/distill-t1
if [ "$1" = fold ]; then
  i=$2
  echo "== $(date -u +%H:%M) fold $i: the teachers' pair"
  $PY -m benchmarks.crossval runs/cv-ens/fold$i-bundle --save-folds $D/pairs$i-folds.json --out $D/pairs$i-crossval.json \
    --md $D/pairs$i.md --title "The teachers' pair of fold $i, trained again for docs/distill-t1's confirmation" > /dev/null
  echo "== $(date -u +%H:%M) fold $i: the student against it"
  $PY -m benchmarks.crossval runs/distill-t1/fold$i-bundle --baseline $D/pairs$i-folds.json --save-folds $D/folds$i.json \
    --out $D/fold$i-crossval.json --md $D/fold$i.md \
    --title "The T = 1 student against its teachers' pair, fold $i" > /dev/null
elif [ "$1" = confirm ]; then
  echo "== $(date -u +%H:%M) folds 2 and 4 alone"
  $PY -m benchmarks.crossval $D/folds2.json $D/folds4.json --baseline $D/pairs2-folds.json $D/pairs4-folds.json \
    --out $D/confirm.json --md $D/confirm.md \
    --title "The T = 1 student against its teachers' pair, folds 2 and 4 alone (docs/distill-t1/PLAN.md's confirmation)" > /dev/null
  echo "== $(date -u +%H:%M) all five folds"
  $PY -m benchmarks.crossval $D/folds.json $D/folds2.json $D/folds4.json \
    --baseline docs/distill-pair/pairs-folds.json $D/pairs2-folds.json $D/pairs4-folds.json --out $D/five.json \
    --md $D/five.md --title "The T = 1 student against its teachers' pair, all five folds" > /dev/null
fi
echo "scored $* $(date -u)"
