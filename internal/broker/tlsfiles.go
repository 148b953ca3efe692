package broker

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certFiles serves the certificate in a pair of files (a Secret volume the
// kubelet keeps current), re-reading them when they change.
type certFiles struct {
	cert, key string

	mu      sync.Mutex // protects the fields below
	loaded  *tls.Certificate
	stamp   time.Time
	checked time.Time
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.loaded != nil && now.Sub(c.checked) < 10*time.Second {
		return c.loaded, nil
	}
	c.checked = now
	st, err := os.Stat(c.cert)
	if err == nil && c.loaded != nil && st.ModTime().Equal(c.stamp) {
		return c.loaded, nil
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		if c.loaded != nil {
			return c.loaded, nil // keep serving the last good one
		}
		return nil, fmt.Errorf("load broker certificate: %w", err)
	}
	c.loaded = &pair
	if st != nil {
		c.stamp = st.ModTime()
	}
	return c.loaded, nil
}
