// Package servingcert manages the webhook's own serving certificate: a
// self-signed CA and a serving certificate for the webhook's Service,
// stored in one Secret (the source of truth shared by all replicas), rotated
// before expiry, with the CA bundle of one MutatingWebhookConfiguration kept
// in sync.
//
// Order on every change: write the Secret, then make the webhook
// configuration trust the CA bundle, then serve the new certificate. When
// the CA itself is renewed the previous CA stays in the bundle until it
// expires, so replicas still serving a certificate from it stay trusted.
//
// Limits: the manager needs get/update on its Secret (create only when the
// Secret does not exist; deploy/webhook ships an empty one so that RBAC can
// name it) and get/patch on its MutatingWebhookConfiguration. Keys are
// ECDSA P-256. Replicas converge through optimistic concurrency on the
// Secret; a replica re-reads the Secret every Resync.
package servingcert
