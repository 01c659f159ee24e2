#!/usr/bin/env bash
# Bayesian CNN table over split seeds: standard normal and log-uniform (Xavier init), the deep
# weight prior (DWP init, the reference's command) and the Gaussian kernel prior (init from its
# samples; PRIORS="... gaussian"), every run with the library defaults otherwise, then
# `dwp bnn summary`. Runs go JOBS at a time, one thread each (two torch processes with two
# threads each on two cores run ~10x slower); finished runs are skipped, killed ones resume.
#
#   benchmarks/bnn_splits.sh OUT PRIOR7x7 PRIOR5x5 [EXAMPLES=50] [SPLITS="0 1 2"] [EXTRA="--exact"]
#
# Environment: JOBS (default: the number of cores), DWP (default: dwp), PRIORS (default:
# "normal log-uniform dwp"), EPOCHS (default: the library's 1000; EVERY: evaluate every EVERY
# epochs, default 100); COMMON: options for every run (e.g. "--sampling weight").
set -euo pipefail
out=$1 p7=$2 p5=$3 examples=${4:-50} splits=${5:-"0 1 2"} extra=${6:-}
jobs=${JOBS:-$(nproc)}
dwp=${DWP:-dwp}
priors=${PRIORS:-"normal log-uniform dwp"}
length="--eval-every ${EVERY:-100}${EPOCHS:+ --epochs $EPOCHS}"
mkdir -p "$out"
for s in $splits; do
  for p in $priors; do
    if [ "$p" = dwp ] || [ "$p" = gaussian ]; then init="--init dwp --prior-dirs $p7 $p5 $extra"; else init="--init xavier"; fi
    echo "$dwp bnn train --prior $p $init ${COMMON:-} --examples $examples --split-seed $s $length --out $out/$p-e$examples-s$s"
  done
done | OMP_NUM_THREADS=1 xargs -P "$jobs" -I{} sh -c '{} >/dev/null 2>&1 || echo "failed: {}" >&2'
"$dwp" bnn summary "$out" --json "$out/summary.json"
