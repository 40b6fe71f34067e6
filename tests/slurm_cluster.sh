#!/usr/bin/env bash
# tests/slurm_cluster.sh -- start/stop the single-node Slurm cluster the `slurm` tests run against.
#
#   sudo tests/slurm_cluster.sh start     # install (apt) + start; idempotent, ~0.1 s when already up
#   sudo tests/slurm_cluster.sh stop [--purge]
#   tests/slurm_cluster.sh status         # exit 0 if the cluster answers
#
# Settings (environment), defaults chosen for the test suite:
#   FAKE_GPUS=2        two fake GPUs (gres/gpu on char devices): GPU requests reach sbatch, CUDA_VISIBLE_DEVICES is set
#   SACCT_SHIM=1       a `sacct` stand-in answering from squeue + jobcomp (no MariaDB); 0 removes it
#   WITH_ACCOUNTING=0  1: real accounting (MariaDB + slurmdbd; apt installs ~26 packages the first time)
#   SLURM_CPUS=nproc   CPUs the node advertises
#   MIN_JOB_AGE=300    seconds an ended job stays in squeue (tests/test_slurm_accounting.py uses 5)
# Debian 12 as root; CI: `sudo tests/slurm_cluster.sh start` before pytest (the fixtures call it too).
# The scripts in tests/slurm/ are copies of the recipe in shared/slurm (see FINDINGS.md there).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd=${1:-start}
shift || true
export FAKE_GPUS=${FAKE_GPUS:-2}
export SACCT_SHIM=${SACCT_SHIM:-1}
export WITH_ACCOUNTING=${WITH_ACCOUNTING:-0}
export SMOKE_TEST=${SMOKE_TEST:-1}
shim_installed() { grep -qs 'Minimal `sacct` stand-in' /usr/local/bin/sacct; }
case "$cmd" in
  start)
    if [ "$SACCT_SHIM" != 1 ] && shim_installed; then
      rm -f /usr/local/bin/sacct
      echo "[slurm_cluster] removed the sacct shim (SACCT_SHIM=0)" >&2
    fi
    exec "$here/slurm/start-local-slurm.sh" "$@"
    ;;
  stop)
    exec "$here/slurm/stop-local-slurm.sh" "$@"
    ;;
  status)
    command -v scontrol >/dev/null || { echo "slurm is not installed" >&2; exit 1; }
    timeout 10 scontrol ping | grep -q "is UP" || { echo "slurmctld is not up" >&2; exit 1; }
    sinfo -h -o '%T' | grep -Eq '^(idle|mixed|allocated|completing)$' || { echo "no usable node" >&2; exit 1; }
    echo "up (sacct: $(sacct -n -X -j 1 -o JobID >/dev/null 2>&1 && echo yes || echo no))"
    ;;
  *)
    echo "usage: $0 start|stop [--purge]|status" >&2
    exit 2
    ;;
esac
