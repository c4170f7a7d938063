#!/usr/bin/env bash
# The runs behind the Results section of ReadMe.md, at the default (homework) flags, 100k updates:
# TD3, TD3+BC (alpha_reg 10), CQL (alpha 5) and the uniform-only CQL ablation, seeds 0 1 2, and the
# alpha_reg sweep (seed 0, 30k updates). Two queues run side by side, one thread each, so the six
# long CQL runs are spread over both cores. The sweep goes to <out>_sweep/, apart from the runs the
# README's table averages. Then:
#   python plot.py results/homework --out docs/ --behaviour_return 1673
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-results/homework}
run() { OMP_NUM_THREADS=1 python runner.py --agent td3 --total_steps 100000 --threads 1 --results_dir "$out" "$@"; }
start=$(date +%s)
( for s in 0 1 2; do run --cql_alpha 5 --seed $s; done
  run --bc_weight 10 --seed 0
  run --seed 0
  OMP_NUM_THREADS=1 python sweep.py --bc_weight 0.1 1 10 100 --results_dir "${out}_sweep" --threads 1 ) &
( for s in 0 1 2; do run --cql_alpha 5 --cql_uniform_only --seed $s; done
  for s in 1 2; do run --bc_weight 10 --seed $s; done
  for s in 1 2; do run --seed $s; done ) &
wait
echo "all runs finished in $(( $(date +%s) - start )) s"
