// Package agent is podid's node agent: an IMDS-compatible HTTP server
// (GET /metadata/identity/oauth2/token, docs/contracts.md §1) that serves tokens
// to the pods of one node without any identity attached to the node.
//
// For each request it resolves the source IP to exactly one running,
// non-hostNetwork pod of this node (Resolver: an informer-fed PodIndex plus a
// rate-limited live confirmation from the API server; with a Guard, only
// addresses the node's CNI records tie to the same pod and whose
// anti-spoofing rules are in place), decides which
// identities that pod may use (Decider: the v1 rules of package binding, or
// the v2 service-account annotation), lets the caller pick one, obtains the
// token through the cache of package token, checks that the same pod (by
// UID) still owns the IP, and answers in IMDS's JSON shape. Run wires the
// informers, the token cache, the interception rules (package intercept),
// the IMDS listener and the health/metrics listener, and stops them together.
//
// Limits: IPv4 and IPv6 pod IPs are indexed, but interception is IPv4 only;
// /metadata/instance is refused (403) by policy; object_id selection is not
// supported; excepted pods are refused, never passed through. The window in
// which a watch lagging behind an IP reuse could be trusted is bounded by
// Config.ConfirmTTL, not closed, unless it is set to confirm every request.
package agent
