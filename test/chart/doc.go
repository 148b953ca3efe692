// Package chart tests the Helm chart deploy/chart/podid with the real helm CLI
// (hack/install-helm.sh builds it; $HELM or $PODID_CACHE/bin/helm): lint,
// rendering for the shipped values files with every object decoded strictly
// into its Kubernetes type, the values schema's rejections, and that the
// manifests under deploy/ are the chart's rendering.
package chart
