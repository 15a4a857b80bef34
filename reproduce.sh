#!/usr/bin/env bash
# The whole study, stage by stage (DESIGN.md): data -> base -> lua, tinystories -> luastories
# (SLERP) -> one SAE per model -> feature tracking and the report.
# Finished stages are skipped and interrupted ones resume, so re-running is always safe;
# delete $OUT (and $DATA) to start over. At the end a table of the stages (wall time, throughput,
# MFU) is printed and written to $OUT/analysis/stages.md and stages.json.
#
#   ./reproduce.sh                                              # built-in sample corpus, tiny preset, CPU, offline
#   SOURCE=local:../shared/corpora DATA=data_local OUT=out_local ./reproduce.sh
#   SOURCE=hf PRESET=paper DATA=data_paper OUT=out_paper ./reproduce.sh   # the paper, one GPU, online
#   ./reproduce.sh --compile=false --device=cuda               # extra settings, given to every stage that has them
#   EXTRA="--compile=false" ./reproduce.sh                      # the same, from the environment
#
# A kill (Ctrl-C, SIGTERM, SIGHUP) stops the running stage too (it is run in the background and
# waited for, so the signal reaches this script at once); re-run to resume.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
SOURCE=${SOURCE:-sample}
PRESET=${PRESET:-tiny}
DATA=${DATA:-data}
OUT=${OUT:-out}
dirs=(--preset="$PRESET" --data_dir="$DATA" --out_dir="$OUT")
die() { echo "error: $*" >&2; exit 2; }

# -----------------------------------------------------------------------------
# extra settings: EXTRA (split on spaces) and the arguments, each --key=value; every stage gets the
# ones its config has (python <stage>.py --help lists them); one that no stage has is an error
key_of() { local k=${1%%=*}; k=${k#--}; echo "--${k//-/_}"; }  # --max-iters=5 -> --max_iters
read -r -a extra <<< "${EXTRA:-}"
for a in "$@"; do
  case $a in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  extra+=("$a")
done
for a in ${extra[@]+"${extra[@]}"}; do
  [[ $a =~ ^--[A-Za-z_][A-Za-z0-9_-]*=. ]] || die "extra setting '$a': give each as --key=value"
  key=$(key_of "$a")
  case ${key#--} in
    preset|data_dir|out_dir) die "$key is set by reproduce.sh: use PRESET=, DATA= or OUT= instead" ;;
    domain|model|models|name|sweep|resume|overwrite|source) die "$key is chosen per stage by reproduce.sh; run that stage's script by hand to change it" ;;
  esac
done
declare -A stage_keys=()
keys_of() {  # the --keys a stage script takes, from its --help (asked once per script)
  if [ -z "${stage_keys[$1]+x}" ]; then
    stage_keys[$1]=" $("$PY" "$1" --help 2>/dev/null | grep -oE -- '^ +--[A-Za-z_][A-Za-z0-9_]*' | tr -d ' ' | tr '\n' ' ' || true) "
  fi
}
scripts=(data.py train.py merge.py sae.py analyze.py)
if [ ${#extra[@]} -gt 0 ]; then
  for s in "${scripts[@]}"; do keys_of "$s"; done
  for a in "${extra[@]}"; do
    key=$(key_of "$a")
    taken=""
    for s in "${scripts[@]}"; do [[ ${stage_keys[$s]} == *" $key "* ]] && taken="$taken $s"; done
    [ -n "$taken" ] || die "no stage takes $key; python <stage>.py --help lists each stage's settings"
    echo "extra setting $a ->$taken"
  done
fi
extras_for() {  # the extra settings script $1 takes, one per line
  local a key
  for a in ${extra[@]+"${extra[@]}"}; do
    key=$(key_of "$a")
    [[ ${stage_keys[$1]} == *" $key "* ]] && printf '%s\n' "$a"
  done
  return 0
}

# -----------------------------------------------------------------------------
# each stage runs in the background and is waited for: a signal then reaches this script at once,
# and the trap passes it on (SIGTERM: a background child ignores SIGINT) before stopping here.
child=""
current="start-up"
stop() {
  trap - TERM INT HUP
  local pids
  pids=$(jobs -p)
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    wait $pids 2>/dev/null || true
  fi
  echo "reproduce.sh: stopped by SIG$1 during '$current'; finished stages are kept, re-run to resume" >&2
  exit "$2"
}
trap 'stop TERM 143' TERM
trap 'stop INT 130' INT
trap 'stop HUP 129' HUP

timings=()  # label<TAB>kind<TAB>output<TAB>start<TAB>seconds, for the table at the end
now() { local t=${EPOCHREALTIME:-$(date +%s)}; echo "${t/,/.}"; }  # seconds; a decimal point in any locale
stage() {  # stage LABEL KIND OUTPUT SCRIPT ARGS...: one stage, timed
  local label=$1 kind=$2 output=$3 script=$4 rc=0 t0 t1 more=()
  shift 4
  current=$label
  echo; echo "=== $label ==="
  [ ${#extra[@]} -gt 0 ] && mapfile -t more < <(extras_for "$script")
  t0=$(now)
  "$PY" "$script" "$@" ${more[@]+"${more[@]}"} &
  child=$!
  wait "$child" || rc=$?
  child=""
  t1=$(now)
  timings+=("$label"$'\t'"$kind"$'\t'"$output"$'\t'"$t0"$'\t'"$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')")
  if [ "$rc" -ne 0 ]; then
    echo "reproduce.sh: stage '$label' failed (exit $rc); fix what it says above and re-run (finished stages are skipped)" >&2
    exit "$rc"
  fi
}
t_start=$(now)

stage "data: tokenizer and token files ($SOURCE)" data "$DATA" \
  data.py --domain all --source "$SOURCE" --preset "$PRESET" --data_dir "$DATA"

for d in base lua tinystories; do
  stage "train $d" train "$OUT/$d" train.py --domain $d "${dirs[@]}" --resume
done

# a no-op when out/luastories was made from these very inputs
stage "merge: luastories = SLERP(lua, tinystories, t=0.58)" merge "$OUT/luastories" merge.py "${dirs[@]}"

stage "merge sweep over t" merge "$OUT" merge.py --sweep "${dirs[@]}"

for m in base lua tinystories luastories; do
  stage "sae for $m" sae "$OUT/sae_$m" sae.py --model $m "${dirs[@]}" --resume
done

stage "analysis: feature tracking and the report" analyze "$OUT/analysis" analyze.py "${dirs[@]}"
current="the stage table"

# -----------------------------------------------------------------------------
# the account: wall time of each stage in this run, its throughput and MFU from its own metrics
# (train: tokens_per_s; sae: the mean act_per_s of its history; analyze: tokens streamed per second),
# and on a GPU the peak memory each stage held (torch.cuda.max_memory_allocated)
"$PY" - "$OUT" "$(now)" "$t_start" "${timings[@]}" <<'EOF'
import os, sys
import common
out, t_end, t_start = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = []
for line in sys.argv[4:]:
    label, kind, output, t0, wall = line.split("\t")
    row = {"stage": label, "wall_s": float(wall), "rate": None, "unit": None, "mfu": None, "peak_gpu_mib": None, "note": ""}
    path = {"train": "metrics.json", "sae": "metrics.json", "analyze": "results.json"}.get(kind)
    path = os.path.join(output, path) if path else None
    try:
        m = common.read_json(path) if path and os.path.exists(path) else None
    except (OSError, ValueError):
        m, row["note"] = None, f"{path} unreadable"
    if m is not None:
        if os.path.getmtime(path) < float(t0):
            row["note"] = "up to date: rate from the run that made it"
        if kind == "train":
            row["rate"], row["unit"] = m.get("tokens_per_s"), "tokens/s"
        elif kind == "sae":
            rates = [h["act_per_s"] for h in m.get("history", []) if h.get("act_per_s")]
            row["rate"], row["unit"] = (sum(rates) / len(rates) if rates else None), "activations/s"
        elif m.get("stream_seconds"):  # the token set over the time of all its passes (pairs in groups that fit)
            row["rate"], row["unit"] = m["token_set"]["n_tokens"] / m["stream_seconds"], "tokens/s (stream)"
            if m.get("stream_passes", 1) > 1:
                row["note"] = (row["note"] + f"; {m['stream_passes']} passes").lstrip("; ")
        row["mfu"] = m.get("mfu")  # a fraction, where the stage measured one (a GPU run)
        row["peak_gpu_mib"] = m.get("peak_gpu_mib")  # torch's most allocated GPU memory in the stage (a GPU run)
    rows.append(row)
table = ["| stage | wall s | throughput | MFU | peak GPU MiB | note |", "|---|---:|---:|---:|---:|---|"]
for r in rows:
    rate = f"{r['rate']:,.0f} {r['unit']}" if r["rate"] else "-"
    mfu = f"{100 * r['mfu']:.1f}%" if isinstance(r["mfu"], (int, float)) else "-"
    gpu = f"{r['peak_gpu_mib']:,.0f}" if isinstance(r["peak_gpu_mib"], (int, float)) else "-"
    table.append(f"| {r['stage']} | {r['wall_s']:.1f} | {rate} | {mfu} | {gpu} | {r['note']} |")
table.append(f"| total | {t_end - t_start:.1f} | | | | |")
text = "\n".join(table) + "\n"
print("\n" + text, end="")
adir = os.path.join(out, "analysis")
common.atomic_write_text(os.path.join(adir, "stages.md"), text)
common.atomic_write_json(os.path.join(adir, "stages.json"), {"stages": rows, "total_s": round(t_end - t_start, 2),
                                                             "provenance": common.provenance({"argv": sys.argv[1:]})})
print(f"-> {os.path.join(adir, 'stages.md')}")
EOF

echo; echo "done in $(awk -v a="$t_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s; open $OUT/analysis/report.html"
