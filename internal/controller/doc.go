// Package controller reconciles pods × AzureIdentityBindings × AzureIdentities
// into AzureAssignedIdentity records ("which pod holds which identity on which
// node") and keeps conditions on identities, bindings and exceptions that say
// what is wrong and how to fix it.
//
// It reads only from informer caches and writes only when the stored state
// differs from the desired one, so a resync or a restart with unchanged state
// makes no API writes. It never reads Secrets. Matching rules live in
// internal/binding, shared with the node agent.
package controller
