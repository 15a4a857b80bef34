#!/usr/bin/env bash
# The whole study, stage by stage (DESIGN.md): data -> base -> lua, tinystories -> luastories
# (SLERP) -> one SAE per model -> feature tracking and the report.
# Finished stages are skipped and interrupted ones resume, so re-running is always safe;
# delete $OUT (and $DATA) to start over.
#
#   ./reproduce.sh                                              # built-in sample corpus, tiny preset, CPU, offline
#   SOURCE=local:../shared/corpora DATA=data_local OUT=out_local ./reproduce.sh
#   SOURCE=hf PRESET=paper DATA=data_paper OUT=out_paper ./reproduce.sh   # the paper, one GPU, online
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
SOURCE=${SOURCE:-sample}
PRESET=${PRESET:-tiny}
DATA=${DATA:-data}
OUT=${OUT:-out}
dirs="--preset=$PRESET --data_dir=$DATA --out_dir=$OUT"
stage() { echo; echo "=== $* ==="; }
t0=$SECONDS

stage "data: tokenizer and token files ($SOURCE)"
$PY data.py --domain all --source "$SOURCE" --preset "$PRESET" --data_dir "$DATA"

for d in base lua tinystories; do
  stage "train $d"
  $PY train.py --domain $d $dirs --resume
done

stage "merge: luastories = SLERP(lua, tinystories, t=0.58)"
$PY merge.py $dirs            # a no-op when out/luastories was made from these very inputs

stage "merge sweep over t"
$PY merge.py --sweep $dirs

for m in base lua tinystories luastories; do
  stage "sae for $m"
  $PY sae.py --model $m $dirs --resume
done

stage "analysis: feature tracking and the report"
$PY analyze.py $dirs

echo; echo "done in $((SECONDS - t0)) s; open $OUT/analysis/report.html"
