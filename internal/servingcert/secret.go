package servingcert

import (
	"fmt"
	"time"

	"github.com/podid/podid/internal/pki"
)

// Secret data keys.
const (
	KeyCABundle = "ca.crt" // PEM: the current CA first, then older CAs still valid
	KeyCAKey    = "ca.key" // PEM (PKCS#8): the current CA's key
	KeyCert     = "tls.crt"
	KeyKey      = "tls.key"
)

// backdate tolerates clock skew between the webhook and the API server.
const backdate = time.Hour

func newCA(now time.Time, validity time.Duration) (*pki.KeyPair, error) {
	return pki.NewCA(fmt.Sprintf("podid-webhook-ca@%d", now.Unix()), now.Add(-backdate), now.Add(validity))
}

func newLeaf(ca *pki.KeyPair, hosts []string, now time.Time, validity time.Duration) (*pki.KeyPair, error) {
	return ca.IssueServing(hosts, now.Add(-backdate), now.Add(validity))
}
