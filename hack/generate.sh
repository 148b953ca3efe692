#!/usr/bin/env bash
# Regenerates deepcopy code, CRD YAML and the controller's RBAC from the Go
# sources with the pinned controller-gen (a go tool in go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
go tool controller-gen object paths=./api/...
go tool controller-gen crd paths=./api/... output:crd:artifacts:config=deploy/crds
go tool controller-gen rbac:roleName=podid-controller paths=./internal/controller/... output:rbac:artifacts:config=deploy/controller
