// Package token obtains access tokens for pod identities and caches them.
//
// A Source turns a Request (identity, resource, requesting pod) into a Token.
// Three sources exist: Federated (a Kubernetes TokenRequest bound to the
// requesting pod, exchanged at the identity provider as a client assertion),
// Secret (type 1: client secret read from a Secret only when a token is
// needed) and Certificate (type 2: PEM certificate and key from a Secret).
// Sources talk to the identity provider through MSAL Go's confidential
// client, so real Entra ID and podid sts are reached by configuration only.
//
// Cache wraps a Source: tokens are keyed by Key (identity, resource and, for
// federated identities, the service account whose assertion obtained them),
// refreshed before they expire, fetched once for any number of concurrent
// requests, bounded in number, dropped when no pod that used them remains,
// and served through a provider outage until they expire.
//
// Token values never appear in logs, errors or metric labels: Token's
// String and LogValue redact them.
package token
