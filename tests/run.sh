#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run). As root it first installs and
# starts what the integration tests need: a single-node Slurm cluster and headless
# Chromium (Debian packages). Without root those tests are skipped with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -eq 0 ]]; then
  if ! command -v chromium >/dev/null; then
    echo "tests/run.sh: installing chromium for the report browser test" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
  # A cluster that does not start fails here, with its own message: `eval "$(...)"`
  # would not stop under set -e, and the Slurm tests would then fail for other reasons.
  if ! cluster_env=$(bash tests/slurm/cluster.sh start); then
    echo "tests/run.sh: the test Slurm cluster did not start (its logs: ${CXR_SLURM_DIR:-/tmp/cxr-slurm}/log);" \
      "the Slurm tests cannot run" >&2
    exit 1
  fi
  eval "$cluster_env"
  export CXR_SLURM=1
fi
exec python -m pytest "$@"
