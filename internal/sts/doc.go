// Package sts is podid's local, Entra-compatible identity provider: the
// OAuth 2.0 token endpoint (client secret, certificate assertion, federated
// assertion; v2 and v1 forms) with Entra's error shapes and AADSTS codes,
// OIDC discovery and JWKS with rotating signing keys, and an authenticated
// management API shaped like ARM's Microsoft.ManagedIdentity and
// Microsoft.Authorization (Azure RBAC: built-in role definitions and role
// assignments at any scope, which also authorize every ARM call; data
// planes ask Directory.HasDataAction), plus a small REST API for app
// registrations and app-role assignments.
//
// It serves HTTPS only, with its own CA (real SDKs refuse http authorities).
// State lives in one bbolt file (see package store). A Server is assembled
// by New (no I/O); Open loads state and key material; Serve or
// ListenAndServe block until the context ends.
//
// Inside, a Directory owns the tenants, principals, credentials, app-role
// and Azure role assignments over the store (validation, one transaction per write, the
// indexes issuance reads); mgmt serves the management APIs over it and
// decides who may manage what; Server keeps the token and metadata
// endpoints, the keys and the routing.
//
// Limits: one process owns the state file (bbolt locks it); there is no
// user sign-in, only the client-credentials grant; tokens are RS256.
package sts
