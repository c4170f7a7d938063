#!/usr/bin/env bash
# The runs behind docs/problem3.md: BC, filtered BC (top 10 %), TD3, TD3+BC
# (alpha_reg 10), CQL (alpha 5) and IQL on two datasets, and TD3 / TD3+BC with LayerNorm critics on
# medium-v0 (the ablation of where TD3's failure comes from),
# seeds 0 1 2 x 100k updates, the homework's defaults otherwise. Each configuration's seeds train side
# by side in one process (members); TD3 and TD3+BC share one process of 6 members through sweep.py
# (they differ only in --bc_weight). Two queues run at once, one thread each. Then:
#   python plot.py "$out/medium" --out docs/problem3/medium; python plot.py "$out/expert" --out docs/problem3/expert
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-results/problem3}
export OMP_NUM_THREADS=1
medium=mujoco/hopper/medium-v0
expert=mujoco/hopper/expert-v0
seeds() {  # seeds <dataset> <flags...>: one configuration, three seeds side by side
  local name=$1; shift
  python runner.py --total_steps 100000 --threads 1 --seeds 0 1 2 --results_dir "$out/${name#mujoco/hopper/}" \
    --dataset "$name" "$@"
}
td3_pair() {  # td3_pair <dataset> <flags...>: TD3 and TD3+BC (alpha_reg 0 and 10), six members in one process
  local name=$1; shift
  python sweep.py --bc_weight 0 10 --seeds 0 1 2 --members 6 --threads 1 --total_steps 100000 --eval_every 10000 \
    --results_dir "$out/${name#mujoco/hopper/}" --dataset "$name" "$@"
}
start=$(date +%s)
echo "started $(date -u '+%F %T') UTC"
( seeds $medium --cql_alpha 5
  td3_pair $medium
  seeds $expert --agent iql
  seeds $medium --agent bc
  seeds $medium --agent bc --bc_top_percent 10
  seeds $expert --agent bc
  seeds $expert --agent bc --bc_top_percent 10 ) &
( seeds $expert --cql_alpha 5
  seeds $medium --agent iql
  td3_pair $medium --critic_layernorm
  td3_pair $expert ) &
wait
echo "all runs finished in $(( $(date +%s) - start )) s ($(date -u '+%F %T') UTC)"
