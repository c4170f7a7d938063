#!/usr/bin/env bash
# The runs behind docs/problem3.md: nine methods on three datasets, seeds 0 1 2 side by side in one
# process per method, 100k updates, the homework's defaults otherwise:
#   BC, filtered BC (top 10 %), TD3, TD3+BC (alpha_reg 10), CQL (alpha 5), IQL,
#   model-based TD3 (MOPO: 5-step model rollouts, reward penalty lambda), the same with alpha_reg 10,
#   and SPOT (support constraint, weight lambda),
#   and, as a check on (ii), TD3+BC with its paper's weight (--bc_weight auto: alpha_reg = E|Q| / (2.5 x 3)),
#   and TD3+BC with a fixed alpha_reg of 35 (about what auto reaches: heavier than 10 but not growing with Q),
#   which tells the two apart (check_ii, after the lanes; expert and the 2 % set first, where (ii) turned on it),
# on mujoco/hopper/medium-replay-v0 (broad), medium-v0 and expert-v0 (narrow), in that order; then
# TD3+BC, SPOT and BC on 2 % of medium-v0's episodes (--episodes_percent 2: few samples per state).
# lambda is MOPO's and SPOT's own per-dataset value where their papers set one (medium, medium-replay;
# ../MODEL_BASED.md of the workplace, docs/problem3.md), this repo's default elsewhere (expert).
#
# Two lanes (a, b) run at once, one thread each. Every method has a folder of its own,
# $out/<dataset>/<method>/; the script can be run again at any time: a method whose folder holds
# runs is resumed from its checkpoints (finished ones say so and are skipped), one whose logs alone are
# kept (below: it finished in an earlier checkout) is skipped, one with neither starts.
# Stop it with Ctrl-C (or kill the lanes' runner.py processes): each run stops at a checkpoint.
# After each method, its runs' logs (config.json, progress.csv, train.csv; no checkpoints) are copied to
# docs/problem3/runs/, kept in git: the page's numbers outlive the machine that ran them.
# Then: python docs/problem3_tables.py (the tables and figures of docs/problem3.md, from those copies).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-results/problem3}
logs=${LOGS_DIR:-docs/problem3/runs}
export OMP_NUM_THREADS=1

keep_logs() {  # keep_logs <folder>: copy its runs' logs to the same place under $logs
  local run file kept
  for run in "$1"/*/; do
    [ -d "$run" ] || continue  # no run folder: nothing to keep (the glob stayed a pattern)
    kept=$logs/${run#"$out"/}
    mkdir -p "$kept"
    for file in config.json progress.csv train.csv; do
      if [ -e "$run$file" ]; then cp "$run$file" "$kept"; fi
    done
  done
}

run_in() {  # run_in <folder> <dataset> <flags...>: one method's three seeds, started, resumed or kept
  local folder=$1 dataset=$2; shift 2
  local begun=("$folder"/*/config.json) kept=("$logs/${folder#"$out"/}"/*/config.json)
  if [ -e "${begun[0]}" ]; then
    python runner.py --threads 1 --resume "${begun[@]%/config.json}"
  elif [ -e "${kept[0]}" ]; then  # finished on another machine: its logs alone are kept
    echo "$folder: finished earlier, its logs are in ${kept[0]%/*/config.json}/; nothing to do"
    return
  else
    python runner.py --total_steps 100000 --threads 1 --seeds 0 1 2 --dataset "$dataset" \
      --results_dir "$folder" "$@"
  fi
  keep_logs "$folder"
}
method() {  # method <dataset> <name> <flags...>: into $out/<dataset>/<name>/
  local dataset=$1 name=$2; shift 2
  run_in "$out/${dataset#mujoco/hopper/}/$name" "$dataset" "$@"
}
few() {  # few <name> <flags...>: medium-v0 cut to 2 % of its episodes, few samples per state (question ii)
  local name=$1; shift
  run_in "$out/medium-v0-2pct/$name" mujoco/hopper/medium-v0 --episodes_percent 2 "$@"
}
penalty() {  # MOPO's lambda for hopper, per dataset (its paper's), else the repo's default (1.0)
  case $1 in *medium-v0) echo 5.0 ;; *medium-replay-v0) echo 2.5 ;; *) echo 1.0 ;; esac
}
lane_a() {  # the model-based pair first (the dynamics fit is shared through --model_dir), then IQL, BC
  local d=$1 lambda; lambda=$(penalty "$1")
  method "$d" mopo --rollout_length 5 --reward_penalty "$lambda"
  method "$d" mopo_bc --rollout_length 5 --reward_penalty "$lambda" --bc_weight 10
  method "$d" iql --agent iql
  method "$d" bc --agent bc
  method "$d" bc_top10 --agent bc --bc_top_percent 10
}
lane_b() {  # SPOT (lambda 0.1, its paper's for hopper medium and medium-replay), CQL, TD3, TD3+BC at 10 and auto
  local d=$1
  method "$d" spot --support_weight 0.1
  method "$d" cql --cql_alpha 5
  method "$d" td3
  method "$d" td3_bc --bc_weight 10
  method "$d" td3_bc_auto --bc_weight auto  # the check on (ii): the BC term scaled as SPOT's is, by E|Q|
}
few_a() { few td3_bc --bc_weight 10; few bc --agent bc; few td3_bc_auto --bc_weight auto; }
few_b() { few spot --support_weight 0.1; }
check_ii() {  # a fixed alpha_reg of 35 on every set, two lanes (after both lanes)
  ( method mujoco/hopper/expert-v0 td3_bc_35 --bc_weight 35
    method mujoco/hopper/medium-replay-v0 td3_bc_35 --bc_weight 35 ) &
  ( few td3_bc_35 --bc_weight 35
    method mujoco/hopper/medium-v0 td3_bc_35 --bc_weight 35 ) &
  wait
}
datasets=(mujoco/hopper/medium-replay-v0 mujoco/hopper/medium-v0 mujoco/hopper/expert-v0)
start=$(date +%s)
echo "started $(date -u '+%F %T') UTC"
lanes=${1:-a b}  # `docs/problem3.sh a` runs lane a alone (e.g. one lane per machine)
for lane in $lanes; do
  ( for d in "${datasets[@]}"; do "lane_$lane" "$d"; done; "few_$lane" ) &
done
wait
if [ "$lanes" = "a b" ]; then check_ii; fi
echo "all runs ended after $(( $(date +%s) - start )) s ($(date -u '+%F %T') UTC)"
