// Package cli holds the verbs a podid user types: identity setup (managed
// identities, federated credentials, service accounts, role assignments)
// through the Azure SDK against podid sts or Azure, `doctor` to explain why a
// pod gets no token, and `migrate` from pod identity (v1) to workload
// identity. cmd/podid registers NewCommands on its root.
package cli
