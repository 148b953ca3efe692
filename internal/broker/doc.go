// Package broker is podid's central token broker and the client the node
// agent uses to reach it.
//
// Entra allows 20 federated credentials per identity. Under per-pod
// federation every (namespace, service account) using an identity needs its
// own; with the broker an identity has exactly one, naming the broker's
// own service account, and the broker does the exchange for any pod that
// may use the identity:
//
//	agent ──POST /v1/token (Bearer: the pod's pod-bound token, audience Audience)──▶ broker
//	  broker: TokenReview (audience Audience; bound to a pod) → GET pod (UID, node, not gone)
//	          → identities the pod may use (the agent's Decider: v1 bindings, v2 annotation)
//	          → SubjectAccessReview: the pod's service account may use-managed-identity <client-id>
//	          → token cache per (identity, resource) → miss: the broker's OWN projected token
//	            exchanged at the identity provider (package token's Provider)
//
// The pod's token carries the broker's audience, never the exchange
// audience, so neither the agent nor the broker can replay it to Entra.
// The broker keeps no state but caches: tokens per (identity, resource),
// validations per pod token, access decisions per (service account,
// identity). See docs/broker.md for the threat model.
package broker
