#!/usr/bin/env bash
# Install a single-node SLURM (slurmctld, slurmd, client tools) and munge from Debian packages.
# Idempotent: does nothing when the binaries are already present. Needs root (CI runs as root).
# Used by .ci/run before `make test`, so that tests/test_slurm.py can start a real cluster.
set -euo pipefail

need=(slurmctld slurmd sbatch squeue sinfo scontrol munged)
missing=0
for b in "${need[@]}"; do
  if ! command -v "$b" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$b" ]; then
    missing=1
  fi
done
if [ "$missing" = "0" ]; then
  echo "install-slurm: SLURM and munge already installed" >&2
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  echo "install-slurm: must run as root to install packages" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  slurmctld slurmd slurm-client munge
# The packages may try to start services (no systemd in containers): the tests start the
# daemons themselves with a private configuration, so nothing else is needed here.
echo "install-slurm: installed slurmctld $(dpkg-query -W -f='${Version}' slurmctld)" >&2
