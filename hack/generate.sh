#!/usr/bin/env bash
# Regenerates deepcopy code and CRD YAML from api/v1 with the pinned controller-gen.
set -euo pipefail
cd "$(dirname "$0")/.."
go tool controller-gen object paths=./api/...
go tool controller-gen crd paths=./api/... output:crd:artifacts:config=deploy/crds
