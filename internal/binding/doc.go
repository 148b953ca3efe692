// Package binding decides which AzureIdentities a pod may hold under the
// pod-identity (v1) model: bindings select pods by the aadpodidbinding label,
// identities are looked up in the binding's namespace, exceptions and the
// namespaced Behavior annotation are honoured, and invalid identities are
// reported rather than used. The controller and the node agent both call it,
// so the two never disagree. It is pure logic: no I/O, no clock.
package binding
