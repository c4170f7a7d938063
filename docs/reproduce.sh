#!/usr/bin/env bash
# The runs behind the Results section of ReadMe.md, at the default (homework) flags, 100k updates:
# TD3, TD3+BC (alpha_reg 10), CQL (alpha 5) and the uniform-only CQL ablation, seeds 0 1 2, and the
# alpha_reg sweep (seed 0, 30k updates). Each configuration's three seeds train side by side in one
# process (--seeds: members of one agent, networks.py), the sweep's four values likewise. Two queues
# run at once, one thread each, the two CQL groups (the longest) first. The sweep goes to <out>_sweep/,
# apart from the runs the README's table averages. Then:
#   python plot.py results/homework --out docs/ --behaviour_return 1673
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-results/homework}
export OMP_NUM_THREADS=1
seeds() { python runner.py --agent td3 --total_steps 100000 --threads 1 --seeds 0 1 2 --results_dir "$out" "$@"; }
start=$(date +%s)
echo "started $(date -u '+%F %T') UTC"
( seeds --cql_alpha 5
  seeds ) &
( seeds --cql_alpha 5 --cql_uniform_only
  seeds --bc_weight 10
  python sweep.py --bc_weight 0.1 1 10 100 --members 4 --threads 1 --results_dir "${out}_sweep" ) &
wait
echo "all runs finished in $(( $(date +%s) - start )) s ($(date -u '+%F %T') UTC)"
