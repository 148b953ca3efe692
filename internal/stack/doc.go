// Package stack is the main job behind `podid up` and `podid down`: the
// project's local single-node cluster (hack/cluster.sh, hack/image.sh), all
// of podid installed from its Helm chart, identities set up with podid's own
// CLI against the sts's ARM API, the seed articles' manifests and the demo
// pods that prove a token arrives, and a summary a person reads in ten
// seconds. Everything after the node is up is Go; the node itself stays the
// hack scripts' recipe, which the tests share.
//
// The demos are data (Demos, Identities): a new demo is one entry.
package stack
