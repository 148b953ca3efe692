// Package store persists the sts's state (tenants, principals with their
// credentials, app-role and Azure role assignments, signing keys, TLS material) in one bbolt
// file. Every write is one bbolt transaction, so a crash leaves either the old
// or the new state, never a mix. Values are JSON; keys are stable ids.
//
// The store does not interpret credentials: callers hash secrets before
// handing them over and never read private keys for anything but signing.
package store
