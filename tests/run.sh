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
  eval "$(bash tests/slurm/cluster.sh start)"
  export CXR_SLURM=1
fi
exec python -m pytest "$@"
