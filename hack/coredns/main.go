// Command coredns is CoreDNS (github.com/coredns/coredns, the version go.mod
// pins) with only the plugins the local cluster's DNS uses, compiled in the
// way CoreDNS documents for a custom plugin set: its coremain plus the plugin
// packages. hack/install-coredns.sh builds it; its own module keeps CoreDNS's
// dependencies out of podid's go.mod. The Corefile it runs is
// hack/cluster.sh's (docs/local-cluster.md "Cluster DNS"). A server block's
// plugins run in CoreDNS's own order (its plugin.cfg), not the Corefile's.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
