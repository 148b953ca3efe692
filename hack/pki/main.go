// Command pki writes the local cluster's PKI (hack/cluster.sh) with podid's
// own certificate code (internal/pki): one CA, the API server's and the
// kubelet's serving certificates, the client certificates of the control
// plane and of the admin, and the service-account signing key.
//
//	go run ./hack/pki -dir DIR -node-name NAME -node-ip IP -service-ip IP
//	go run ./hack/pki serving -dir DIR -name NAME -hosts HOST,...
//
// The second form adds one serving certificate under the existing CA of DIR
// (a node-side server such as the local queue service, hack/azurite.sh): kept
// when it already names exactly HOSTS, chains to the CA and has 30 days left,
// else issued anew, so a cached PKI gains it without being remade.
//
// DIR must not exist or be empty; files are NAME.crt / NAME.key (PEM, keys
// PKCS#8, 0600), ca.crt / ca.key, and sa.key / sa.pub (RSA 2048: the API
// server signs service-account tokens RS256, which federated identity
// credentials require).
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/podid/podid/internal/pki"
)

// validity matches the cluster's lifetime: the cache outlives many runs.
const validity = 10 * 365 * 24 * time.Hour

type cert struct {
	name    string
	subject pkix.Name
	hosts   []string // serving names; none for a client-only certificate
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serving" {
		fs := flag.NewFlagSet("serving", flag.ExitOnError)
		dir := fs.String("dir", "", "the PKI directory (ca.crt, ca.key)")
		name := fs.String("name", "", "the certificate's file name (NAME.crt, NAME.key)")
		hosts := fs.String("hosts", "", "comma-separated DNS names (wildcards allowed) and IP addresses")
		_ = fs.Parse(os.Args[2:])
		issued, err := serving(*dir, *name, strings.Split(*hosts, ","), time.Now())
		if err != nil {
			fmt.Fprintln(os.Stderr, "pki serving:", err)
			os.Exit(1)
		}
		if issued {
			fmt.Fprintf(os.Stderr, "pki: issued %s.crt for %s\n", *name, *hosts)
		}
		return
	}
	dir := flag.String("dir", "", "directory to write (must not exist or be empty)")
	node := flag.String("node-name", "", "the node's name")
	nodeIP := flag.String("node-ip", "", "the node's address")
	svcIP := flag.String("service-ip", "", "the kubernetes Service's cluster IP")
	flag.Parse()
	if err := run(*dir, *node, *nodeIP, *svcIP); err != nil {
		fmt.Fprintln(os.Stderr, "pki:", err)
		os.Exit(1)
	}
}

func run(dir, node, nodeIP, svcIP string) error {
	if dir == "" || node == "" {
		return errors.New("-dir and -node-name are required")
	}
	for flagName, v := range map[string]string{"-node-ip": nodeIP, "-service-ip": svcIP} {
		if net.ParseIP(v) == nil {
			return fmt.Errorf("%s %q is not an IP address", flagName, v)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		return fmt.Errorf("%s must be empty (%d entries, %v)", dir, len(entries), err)
	}
	now := time.Now()
	ca, err := pki.NewCA("podid-local-ca", now.Add(-time.Hour), now.Add(validity))
	if err != nil {
		return err
	}
	if err := write(dir, "ca", ca); err != nil {
		return err
	}
	certs := []cert{
		{name: "apiserver", subject: pkix.Name{CommonName: "kube-apiserver"}, hosts: []string{
			"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
			"localhost", "127.0.0.1", svcIP, nodeIP}},
		{name: "apiserver-kubelet-client", subject: pkix.Name{Organization: []string{"system:masters"}, CommonName: "kube-apiserver-kubelet-client"}},
		{name: "kubelet-serving", subject: pkix.Name{CommonName: node}, hosts: []string{node, "localhost", "127.0.0.1", nodeIP}},
		{name: "admin", subject: pkix.Name{Organization: []string{"system:masters"}, CommonName: "podid-admin"}},
		{name: "kubelet", subject: pkix.Name{Organization: []string{"system:nodes"}, CommonName: "system:node:" + node}},
		{name: "controller-manager", subject: pkix.Name{CommonName: "system:kube-controller-manager"}},
		{name: "scheduler", subject: pkix.Name{CommonName: "system:kube-scheduler"}},
		{name: "kube-proxy", subject: pkix.Name{CommonName: "system:kube-proxy"}},
	}
	for _, c := range certs {
		tmpl := &x509.Certificate{
			Subject:     c.subject,
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(validity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if len(c.hosts) > 0 {
			tmpl.DNSNames, tmpl.IPAddresses = pki.SplitHosts(c.hosts)
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
		kp, err := ca.Issue(tmpl)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if err := write(dir, c.name, kp); err != nil {
			return err
		}
	}
	return writeSAKey(dir)
}

// serving makes sure dir/name.crt is a serving certificate for exactly hosts
// under dir's CA, valid for at least 30 more days; it reports whether it
// issued a new one.
func serving(dir, name string, hosts []string, now time.Time) (bool, error) {
	if dir == "" || name == "" || strings.ContainsAny(name, "/.") {
		return false, errors.New("-dir and a plain -name are required")
	}
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return strings.TrimSpace(h) == "" })
	if len(hosts) == 0 {
		return false, errors.New("-hosts names no host")
	}
	caCert, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return false, fmt.Errorf("the CA (make the cluster PKI first): %w", err)
	}
	caKey, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return false, fmt.Errorf("the CA key: %w", err)
	}
	ca, err := pki.ParsePair(caCert, caKey)
	if err != nil {
		return false, fmt.Errorf("the CA in %s: %w", dir, err)
	}
	if !ca.Cert.IsCA {
		return false, fmt.Errorf("%s/ca.crt is not a CA", dir)
	}
	if cur, err := loadPair(dir, name); err == nil && pki.HostsMatch(cur.Cert, hosts) &&
		cur.Cert.CheckSignatureFrom(ca.Cert) == nil && now.Add(30*24*time.Hour).Before(cur.Cert.NotAfter) {
		return false, nil
	}
	kp, err := ca.IssueServing(hosts, now.Add(-time.Hour), now.Add(validity))
	if err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	return true, write(dir, name, kp)
}

func loadPair(dir, name string) (*pki.KeyPair, error) {
	c, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	return pki.ParsePair(c, k)
}

func write(dir, name string, kp *pki.KeyPair) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), kp.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), kp.KeyPEM, 0o600)
}

func writeSAKey(dir string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}
