// Package pki is podid's one certificate authority code: ECDSA P-256 key
// pairs, self-signed CAs that sign leaves only, serving certificates for DNS
// names and IPs, and PEM parsing of pairs and CA bundles.
//
// Its users keep their own storage: the webhook's rotating CA and serving
// certificate live in a Secret (internal/servingcert), and the sts's CA and
// serving certificate in its store (Ensure, below): both are persisted so
// that clients that trust the CA keep trusting it across restarts, and the
// serving certificate is reissued when the requested names change or it
// nears expiry. hack/cluster.sh makes the local cluster's PKI with the same
// code (hack/pki).
package pki
