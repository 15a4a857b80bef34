#!/usr/bin/env bash
# The whole study, stage by stage (DESIGN.md): data -> base -> lua, tinystories -> luastories
# (SLERP) -> two SAEs per model (seeds 0 and 1) -> feature tracking and the report.
# Finished stages are skipped (a current analysis too) and interrupted ones resume, so re-running is safe;
# delete $OUT (and $DATA) to start over. At the end a table of the stages (wall time, throughput,
# MFU) is printed and written to $OUT/analysis/stages.md and stages.json.
#
#   ./reproduce.sh                                              # built-in sample corpus, tiny preset, CPU, offline
#   SOURCE=local:/path/to/corpora DATA=data_local OUT=out_local ./reproduce.sh
#   SOURCE=hf PRESET=paper DATA=data_paper OUT=out_paper ./reproduce.sh   # the paper, one GPU, online
#   ./reproduce.sh --compile=false --device=cuda               # extra settings, given to every stage that has them
#   EXTRA="--compile=false" ./reproduce.sh                      # the same, from the environment
#   JOBS=1 ./reproduce.sh                                       # one stage at a time (default auto: see below)
#   MODELS=authors SOURCE=hf PRESET=paper DATA=data_a OUT=out_a ./reproduce.sh  # the authors' released models
#   DIFFING=1 ./reproduce.sh                                    # + diffing.py (crosscoders) before the analysis
#
# MODELS=authors studies the four models the authors released on the hub instead of training ours:
# the data is encoded with their tokenizer (data.py --tokenizer authors), authors.py fetches and
# converts the models (and prints each one's loss beside its card's), then the SAEs and the analysis.
#
# From the fine-tunes on, JOBS stages run at once, in a fixed order, each once a slot is free and
# the stages it needs have ended (the base SAE beside the fine-tunes, the merge once both are done,
# ...); auto = 2 on a CPU with 2+ free cores, each with half of them as --threads (an extra
# --threads=N is kept, and auto is then 2 only where 2N cores are free), and on GPUs one per GPU,
# each stage given the GPU with the fewest stages on it (CUDA_VISIBLE_DEVICES; the diffing and the
# analysis take one); why: common.stage_jobs. Their lines are then tagged with the stage's name.
#
# A kill (Ctrl-C, SIGTERM, SIGHUP) stops the running stages too (each runs in the background while
# this script polls, so the signal reaches it within 0.2 s); re-run to resume.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3} SOURCE=${SOURCE:-sample} PRESET=${PRESET:-tiny} DATA=${DATA:-data} OUT=${OUT:-out}
JOBS=${JOBS:-auto} MODELS=${MODELS:-ours} DIFFING=${DIFFING:-0}
dirs=(--preset="$PRESET" --data_dir="$DATA" --out_dir="$OUT")
die() { echo "error: $*" >&2; exit 2; }
# the environment's settings, each checked here in one line before anything runs (a bad one would
# otherwise surface stages later, or as a shell error: a huge JOBS overflows bash's arithmetic)
[[ $JOBS == auto || ($JOBS =~ ^[1-9][0-9]{0,2}$ && $JOBS -le 64) ]] \
  || die "JOBS=$JOBS: give how many stages may run at once (1, 2, ... at most 64; the study has 11) or auto"
[[ $MODELS == ours || $MODELS == authors ]] \
  || die "MODELS=$MODELS: ours (trained here) or authors (the authors' released models)"
[[ $DIFFING == 0 || $DIFFING == 1 ]] || die "DIFFING=$DIFFING: 1 (add diffing.py's crosscoders before the analysis) or 0"
[[ $PRESET == tiny || $PRESET == paper ]] || die "PRESET=$PRESET: tiny (a CPU demo) or paper (the paper's sizes, a GPU)"
case $SOURCE in
  sample|hf) ;;
  local:*) [ -d "${SOURCE#local:}" ] || die "SOURCE=$SOURCE: no folder ${SOURCE#local:} (local:DIR needs DIR/<domain>/train.txt, valid.txt)" ;;
  *) die "SOURCE=$SOURCE: sample (built in), local:DIR or hf (download)" ;;
esac
for v in DATA OUT; do
  d=${!v}
  [[ -n $d && $d != *$'\n'* ]] || die "$v='$d': give a folder name"
  [[ ! -e $d || -d $d ]] || die "$v=$d is a file, not a folder; choose another $v"
done
[ "$(realpath -m "$DATA")" != "$(realpath -m "$OUT")" ] || die "DATA and OUT are both $DATA; give each its own folder"
for f in "$OUT/analysis/stages.md" "$OUT/analysis/stages.json"; do  # written at the end: refused now, not then
  [[ ! -e $f && ! -L $f || -f $f ]] || die "$f is not a file but a folder, a device or a pipe; move it away and re-run"
done
command -v "$PY" >/dev/null 2>&1 || die "PYTHON=$PY: no such command; give the python that has torch (e.g. PYTHON=python3)"
"$PY" - <<< 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 \
  || die "PYTHON=$PY does not run as Python 3.10 or later; give the python that has torch (e.g. PYTHON=python3)"
# the stages end when this script is gone, even after kill -9 (common.watch_driver): its pid and start time
export REPRODUCE_PID=$$
REPRODUCE_START=$(awk '{ sub(/^.*\) /, ""); print $20 }' /proc/$$/stat 2>/dev/null || true)
export REPRODUCE_START
scripts=(data.py train.py merge.py sae.py analyze.py)
[ "$MODELS" = ours ] || scripts=(data.py authors.py sae.py analyze.py)
[ "$DIFFING" = 0 ] || scripts+=(diffing.py)

# -----------------------------------------------------------------------------
# extra settings: EXTRA (split on spaces) and the arguments, each --key=value; every stage gets the
# ones its config has (python <stage>.py --help lists them); one that no stage has is an error
key_of() { local k=${1%%=*}; k=${k#--}; echo "--${k//-/_}"; }  # --max-iters=5 -> --max_iters
read -r -a extra <<< "${EXTRA:-}"
for a in "$@"; do
  case $a in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
  extra+=("$a")
done
device=auto threads=0  # for the plan (below)
for a in ${extra[@]+"${extra[@]}"}; do
  [[ $a =~ ^--[A-Za-z_][A-Za-z0-9_-]*=. ]] || die "extra setting '$a': give each as --key=value"
  case $(key_of "$a") in
    --preset|--data_dir|--out_dir) die "$(key_of "$a") is set by reproduce.sh: use PRESET=, DATA= or OUT= instead" ;;
    --domain|--model|--models|--name|--sweep|--resume|--overwrite|--source)
      die "$(key_of "$a") is chosen per stage by reproduce.sh; run that stage's script by hand to change it" ;;
    --device) device=${a#*=} ;;
    --threads) threads=${a#*=} ;;
  esac
done
declare -A takes=() taken=()  # script -> the extra settings it takes (one a line); setting -> the scripts
if [ ${#extra[@]} -gt 0 ]; then
  for s in "${scripts[@]}"; do
    keys=" $("$PY" "$s" --help 2>/dev/null | grep -oE -- '^ +--[A-Za-z_][A-Za-z0-9_]*' | tr -d ' ' | tr '\n' ' ' || true) "
    for a in "${extra[@]}"; do
      [[ $keys == *" $(key_of "$a") "* ]] && takes[$s]+="$a"$'\n' taken[$a]+=" $s"
    done
  done
  for a in "${extra[@]}"; do
    [ -n "${taken[$a]:-}" ] || die "no stage takes $(key_of "$a"); python <stage>.py --help lists each stage's settings"
    echo "extra setting $a ->${taken[$a]}"
  done
  for s in "${!takes[@]}"; do  # each value by its stage's own rules (--help checks them), not stages later
    mapfile -t its <<< "${takes[$s]%$'\n'}"
    why=$("$PY" "$s" --help "${its[@]}" 2>&1 >/dev/null) || die "$s: ${why##*error: }"
  done
  if [ "$device" != auto ]; then  # a GPU asked for that torch does not see: now, not after the data stage
    why=$("$PY" - "$device" 2>&1 >/dev/null <<< 'import sys, common; common.cli(lambda: common.pick_device(sys.argv[1]))') \
      || die "${why##*error: }"
  fi
fi

# -----------------------------------------------------------------------------
# The scheduler. Each stage runs in the background while this script polls (kill -0, every 0.2 s;
# bash's `wait -n` once saw a fine-tune's end only when the SAE stage beside it ended, 84 s later),
# so a signal reaches the trap at once. `stage` starts one once fewer than $slots run; `after`
# waits for the stages named (none named: for all); after a failure nothing more starts, the
# stages running end, and the run stops with the failure's status.
declare -A running=()  # pid -> label<TAB>kind<TAB>output<TAB>start<TAB>note<TAB>gpu, the stages running now
timings=()             # label<TAB>kind<TAB>output<TAB>start<TAB>seconds<TAB>note, for the table at the end
started=$'\n' slots=1 each=0 failed="" failed_rc=0 gpu_ids=()  # gpu_ids: CUDA_VISIBLE_DEVICES of each GPU shared out
now() { local t=${EPOCHREALTIME:-$(date +%s)}; echo "${t/,/.}"; }  # seconds; a decimal point in any locale
tagged() {  # each line of the input as it comes, after [$1] (awk may hold a pipe's lines back)
  local line; while IFS= read -r line || [ -n "$line" ]; do printf '[%s] %s\n' "$1" "$line"; done
}
stage() {  # stage LABEL KIND OUTPUT SCRIPT ARGS...
  local label=$1 kind=$2 output=$3 script=$4 more=() note="" gpu="" pin=()
  shift 4
  reap
  while [ ${#running[@]} -ge "$slots" ]; do sleep 0.2; reap; done
  [ -z "$failed" ] || after
  echo; echo "=== $label ==="
  [ -z "${takes[$script]:-}" ] || mapfile -t more < <(printf %s "${takes[$script]}")
  if [ "$slots" -gt 1 ]; then  # side by side: threads of its own, each line tagged with the stage
    note="side by side"
    if [ "$each" -gt 0 ]; then more+=("--threads=$each"); note+=", --threads=$each"; fi
    if [ ${#gpu_ids[@]} -gt 1 ]; then  # several GPUs: the stage sees only its own (as cuda:0)
      gpu=$(least_busy_gpu)
      pin=("CUDA_VISIBLE_DEVICES=${gpu_ids[gpu]}") note+=", GPU ${gpu_ids[gpu]}"
    fi
    # stdout through a tagger in the same job (waited for with it: no line comes after the stage's end;
    # pipefail gives python's status), stderr through one to stderr (a process substitution)
    env ${pin[@]+"${pin[@]}"} PYTHONUNBUFFERED=1 "$PY" "$script" "$@" ${more[@]+"${more[@]}"} \
      2> >(tagged "$label" >&2) | tagged "$label" &
  else
    "$PY" "$script" "$@" ${more[@]+"${more[@]}"} &
  fi
  running[$!]="$label"$'\t'"$kind"$'\t'"$output"$'\t'"$(now)"$'\t'"$note"$'\t'"$gpu"
  started+="$label"$'\n'
}
reap() {  # record the stages that have ended: wall time, and the first failure
  local pid rc label kind output t0 note gpu wall
  for pid in "${!running[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    IFS=$'\t' read -r label kind output t0 note gpu <<< "${running[$pid]}"
    unset "running[$pid]"
    wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    timings+=("$label"$'\t'"$kind"$'\t'"$output"$'\t'"$t0"$'\t'"$wall"$'\t'"$note")
    [ -n "$note" ] && echo "--- $label: exit $rc after $wall s"
    if [ "$rc" -ne 0 ] && [ -z "$failed" ]; then
      failed="reproduce.sh: stage '$label' failed (exit $rc); fix what it says above"
      failed+="${note:+ (its lines start with [$label])} and re-run (finished stages are skipped)"
      failed_rc=$rc
    fi
  done
}
least_busy_gpu() {  # the GPU (an index of gpu_ids) with the fewest stages running on it, the first of those
  local g e best=0 count=()
  for g in "${!gpu_ids[@]}"; do count[g]=0; done
  for e in ${running[@]+"${running[@]}"}; do
    g=${e##*$'\t'}
    [ -z "$g" ] || count[g]=$((count[g] + 1))
  done
  for g in "${!gpu_ids[@]}"; do [ "${count[g]}" -ge "${count[best]}" ] || best=$g; done
  echo "$best"
}
busy() {  # busy [LABEL...]: whether one of those stages (none named: any) is running
  local e want
  for e in ${running[@]+"${running[@]}"}; do
    [ $# -eq 0 ] && return 0
    for want; do [ "${e%%$'\t'*}" = "$want" ] && return 0; done
  done
  return 1
}
after() {  # after [LABEL...]: wait until those stages (none named: all) have ended; stop at a failure
  local want
  for want; do [[ $started == *$'\n'"$want"$'\n'* ]] || die "after '$want': no stage of that name was started"; done
  reap
  while busy "$@"; do sleep 0.2; reap; done
  [ -z "$failed" ] && return 0
  while busy; do sleep 0.2; reap; done
  echo "$failed" >&2
  exit "$failed_rc"
}
stop() {  # the trap: stop the running stages (SIGTERM: a background child ignores SIGINT) and name them
  trap - TERM INT HUP
  local pids names="" e
  pids=$(jobs -p)
  [ -z "$pids" ] || { kill -TERM $pids 2>/dev/null; wait $pids 2>/dev/null; } || true
  for e in ${running[@]+"${running[@]}"}; do names+="${names:+, }'${e%%$'\t'*}'"; done
  echo "reproduce.sh: stopped by SIG$1 during ${names:-no stage (between stages)}; finished stages are kept," \
    "re-run to resume" >&2
  exit "$2"
}
trap 'stop TERM 143' TERM
trap 'stop INT 130' INT
trap 'stop HUP 129' HUP
t_start=$(now)

plan_slots() {  # from here on, stages that do not depend on each other run $slots at once with --threads=$each
  # and, on several GPUs, a GPU each (common.stage_jobs; an extra --threads is kept and goes to every stage)
  local gpus listed=${CUDA_VISIBLE_DEVICES:-}
  read -r slots each gpus < <("$PY" - "$JOBS" "$device" "$threads" \
    <<< 'import sys, common; print(*common.stage_jobs(*sys.argv[1:3], int(sys.argv[3])))') || true
  [[ $slots =~ ^[1-9][0-9]*$ && $each =~ ^[0-9]+$ && $gpus =~ ^[0-9]+$ ]] \
    || { echo "JOBS: could not plan the stages; one at a time"; slots=1 each=0 gpus=0; }
  [ "$threads" = 0 ] || each=0
  if [ "$slots" -gt 1 ] && [ "$gpus" -gt 1 ]; then  # torch numbers the GPUs CUDA_VISIBLE_DEVICES names, in order
    IFS=, read -r -a gpu_ids <<< "${listed// /}"
    [ ${#gpu_ids[@]} -ge "$gpus" ] || mapfile -t gpu_ids < <(seq 0 $((gpus - 1)))
    gpu_ids=("${gpu_ids[@]:0:gpus}")
  fi
  [ "$slots" -eq 1 ] || echo "stages that do not depend on each other: $slots at once (JOBS=$JOBS)" \
    "$([ "$each" -gt 0 ] && echo "with --threads=$each each")" \
    "$([ ${#gpu_ids[@]} -gt 1 ] && echo "on GPUs ${gpu_ids[*]}, the one with the fewest stages each")"
}

if [ "$MODELS" = authors ]; then  # their four released models: no LM stage of ours
  stage "data: token files with the authors' tokenizer ($SOURCE)" data "$DATA" \
    data.py --domain all --source "$SOURCE" --preset "$PRESET" --data_dir "$DATA" --tokenizer authors
  after
  stage "the authors' models: fetched, converted, their losses" models "$OUT" authors.py "${dirs[@]}"
  after
  plan_slots
  for m in base lua tinystories luastories; do
    stage "sae for $m" sae "$OUT/sae_$m" sae.py --model $m "${dirs[@]}" --resume
  done
else
  stage "data: tokenizer and token files ($SOURCE)" data "$DATA" \
    data.py --domain all --source "$SOURCE" --preset "$PRESET" --data_dir "$DATA"
  after
  stage "train base" train "$OUT/base" train.py --domain base "${dirs[@]}" --resume
  after  # everything after starts from base
  plan_slots
  for d in lua tinystories; do
    stage "train $d" train "$OUT/$d" train.py --domain $d "${dirs[@]}" --resume
  done
  stage "sae for base" sae "$OUT/sae_base" sae.py --model base "${dirs[@]}" --resume  # beside the fine-tunes
  after "train lua" "train tinystories"  # the merges need both fine-tunes
  # a no-op when out/luastories was made from these very inputs
  merge_extra=$(printf %s "${takes[merge.py]:-}" | paste -sd' ')  # the label says what settings were given
  [[ " $merge_extra" == *" --t="* ]] || merge_extra="t=0.58${merge_extra:+ $merge_extra}"  # (the default t)
  merge="merge: luastories = SLERP(lua, tinystories, $merge_extra)"
  stage "$merge" merge "$OUT/luastories" merge.py "${dirs[@]}"
  for m in lua tinystories; do
    stage "sae for $m" sae "$OUT/sae_$m" sae.py --model $m "${dirs[@]}" --resume
  done
  after "$merge"  # its SAE needs luastories
  stage "sae for luastories" sae "$OUT/sae_luastories" sae.py --model luastories "${dirs[@]}" --resume
  stage "merge sweep over t" merge "$OUT" merge.py --sweep "${dirs[@]}"  # the shortest last: it fills the other slot
fi
after  # the analysis reads every model and SAE
slots=1 gpu_ids=()  # diffing and the analysis: one stage, one GPU (DESIGN.md, "Several GPUs")
if [ "$DIFFING" = 1 ]; then  # crosscoders and cross-applied SAEs (issue 28); the analysis folds them in
  stage "diffing: crosscoders and cross-applied SAEs" diffing "$OUT/diffing" diffing.py "${dirs[@]}"
  after
fi
stage "analysis: feature tracking and the report" analyze "$OUT/analysis" analyze.py "${dirs[@]}"
after

# -----------------------------------------------------------------------------
# the account: wall time of each stage in this run, its throughput and MFU from its own metrics
# (train: tokens_per_s; sae: the mean act_per_s of its history; analyze: tokens streamed per second),
# and on a GPU the peak memory each stage held (torch.cuda.max_memory_allocated)
"$PY" - "$OUT" "$(now)" "$t_start" "${timings[@]}" <<'EOF'
import math, os, sys
import common
out, t_end, t_start = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = []
for line in sys.argv[4:]:
    label, kind, output, t0, wall, note = line.split("\t")
    row = {"stage": label, "wall_s": float(wall), "rate": None, "unit": None, "mfu": None, "peak_gpu_mib": None, "note": note}
    path = {"train": "metrics.json", "sae": "metrics.json", "analyze": "results.json"}.get(kind)
    path = os.path.join(output, path) if path else None
    try:
        m = common.read_json(path) if path and os.path.exists(path) else None
    except (OSError, ValueError):
        m, row["note"] = None, f"{path} unreadable; {note}".rstrip("; ")
    if m is not None and not isinstance(m, dict):
        m, row["note"] = None, f"{path} is not a stage's record; {note}".rstrip("; ")
    bad = []  # the values read that are not numbers (a hand-edited or damaged record): left out of the table

    def num(v, name):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return v
        if v is not None:
            bad.append(name)
        return None
    if m is not None:
        if os.path.getmtime(path) < float(t0):
            row["note"] = f"up to date: rate from the run that made it; {note}".rstrip("; ")
        if kind == "train":
            row["rate"], row["unit"] = num(m.get("tokens_per_s"), "tokens_per_s"), "tokens/s"
        elif kind == "sae":
            hist, rates = m.get("history") or [], []
            for h in hist if isinstance(hist, list) else [None]:  # (a history not a list: as one bad entry)
                if not isinstance(h, dict):
                    bad.append("history")
                elif num(h.get("act_per_s"), "act_per_s"):
                    rates.append(h["act_per_s"])
            row["rate"], row["unit"] = (sum(rates) / len(rates) if rates else None), "activations/s"
        elif num(m.get("stream_seconds"), "stream_seconds"):  # the token set over the time of all its passes
            n_tok = num(m["token_set"].get("n_tokens"), "n_tokens") if isinstance(m.get("token_set"), dict) else None
            row["rate"], row["unit"] = (n_tok / m["stream_seconds"] if n_tok is not None else None), "tokens/s (stream)"
            passes = num(m.get("stream_passes"), "stream_passes")
            if passes is not None and passes > 1:
                row["note"] = (row["note"] + f"; {passes} passes").lstrip("; ")
        row["mfu"] = num(m.get("mfu"), "mfu")  # a fraction, where the stage measured one (a GPU run)
        row["peak_gpu_mib"] = num(m.get("peak_gpu_mib"), "peak_gpu_mib")  # torch's most allocated GPU memory
    if bad:
        row["note"] = (row["note"] + f"; {path}: {', '.join(dict.fromkeys(bad))} not a number (left out)").lstrip("; ")
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
