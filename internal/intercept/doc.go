// Package intercept keeps pod traffic for the instance metadata service
// (169.254.169.254:80) redirected to the node agent, with iptables, and
// (Guard) keeps every pod's address tied to its own interface — ebtables
// for bridged pods (address and MAC), iptables and the node's host routes
// for routed ones — built from the node's CNI records (ReadCNIResults), so
// that the source address the agent sees is the pod's.
//
// Rules (in chains owned by podid, jumped to from the top of the built-in
// chains):
//
//	nat    PREROUTING -> PODID-IMDS-NAT:    -s <podCIDR> -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination <agentIP>:<port>
//	filter FORWARD    -> PODID-IMDS-FILTER: -s <podCIDR> -d 169.254.169.254/32 -j DROP
//
// Fail closed: the rules stay when the agent stops, so pod connections are
// refused at the agent's port instead of reaching the real metadata service,
// and anything else from pods to the metadata address is dropped. Only
// Uninstall removes them. Traffic from the host itself (and hostNetwork
// pods) goes through OUTPUT, which podid does not touch: it never reaches
// the agent as pod traffic.
//
// Limits: the interception is IPv4 only (the metadata service has no IPv6
// address; the guard also ties a pod's IPv6 addresses to its port); the
// iptables binary decides between the legacy and nf_tables backends.
package intercept
