#!/usr/bin/env bash
# The runs behind the Results section of ReadMe.md: TD3, TD3+BC (alpha_reg 10) and CQL (alpha 5),
# seeds 0 1 2, 100k updates each, on hopper-medium. Two queues run side by side, one core each,
# so the three long CQL runs are spread over both cores:
#   queue 1: CQL seed 0, CQL seed 2
#   queue 2: TD3+BC seeds 0 1 2, TD3 seeds 0 1 2, CQL seed 1
# (python runner.py ... --seeds 0 1 2 --workers 2 per method gives the same runs, scheduled less evenly.)
# Then: python plot.py results/homework --out docs/
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-results/homework}
run() { OMP_NUM_THREADS=1 python runner.py --agent td3 --total_steps 100000 --threads 1 --results_dir "$out" "$@"; }
start=$(date +%s)
( run --cql_alpha 5 --seed 0; run --cql_alpha 5 --seed 2 ) &
( for s in 0 1 2; do run --bc_weight 10 --seed $s; done
  for s in 0 1 2; do run --seed $s; done
  run --cql_alpha 5 --seed 1 ) &
wait
echo "all runs finished in $(( $(date +%s) - start )) s"
