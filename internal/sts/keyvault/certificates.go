package keyvault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // x5t is SHA-1 by definition (RFC 7515)
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/podid/podid/internal/sts/store"
)

// Content types of a certificate's secret, as Key Vault names them.
const (
	ContentTypePFX = "application/x-pkcs12"
	ContentTypePEM = "application/x-pem-file"
)

// MaxCertificateVersions bounds a certificate's versions (each is kept
// inline with its certificate).
const MaxCertificateVersions = 100

type certSecretProps struct {
	ContentType *string `json:"contentType"`
}

// certPolicyIn is the policy an import may carry. Only secret_props'
// contentType is used (the format of the value); the rest describes
// issuance, which an imported certificate does not have, and is accepted
// because the SDKs and az send it.
type certPolicyIn struct {
	ID              *string          `json:"id"`
	KeyProps        json.RawMessage  `json:"key_props"`
	SecretProps     *certSecretProps `json:"secret_props"`
	X509Props       json.RawMessage  `json:"x509_props"`
	LifetimeActions json.RawMessage  `json:"lifetime_actions"`
	Issuer          json.RawMessage  `json:"issuer"`
	Attributes      *attributesIn    `json:"attributes"`
}

type importBody struct {
	Value             *string            `json:"value"`
	Password          *string            `json:"pwd"`
	Policy            *certPolicyIn      `json:"policy"`
	Attributes        *attributesIn      `json:"attributes"`
	Tags              *map[string]string `json:"tags"`
	PreserveCertOrder *bool              `json:"preserveCertOrder"`
}

// ParsedCertificate is an imported certificate: the leaf, its private key,
// the rest of the chain, and its secret as Key Vault keeps it.
type ParsedCertificate struct {
	Leaf        *x509.Certificate
	Key         crypto.Signer
	Chain       []*x509.Certificate
	ContentType string
	// SecretValue: for PEM the private key (PKCS#8) then the leaf and the
	// chain; for PKCS#12 the same as a base64 PFX without a password.
	SecretValue string
}

// ParseCertificate reads an import's value: a PEM file (a private key and
// certificates) or a base64 PKCS#12 file with password pwd. contentType,
// when set, must name the format the value has.
func ParseCertificate(value, pwd, contentType string) (*ParsedCertificate, error) {
	pemValue := strings.HasPrefix(strings.TrimSpace(value), "-----BEGIN")
	switch {
	case contentType != "" && contentType != ContentTypePEM && contentType != ContentTypePFX:
		return nil, errors.New("secret_props.contentType must be " + ContentTypePFX + " or " + ContentTypePEM)
	case pemValue && contentType == ContentTypePFX:
		return nil, errors.New("the value is PEM but the policy's contentType is " + ContentTypePFX)
	case !pemValue && contentType == ContentTypePEM:
		return nil, errors.New("the value is not PEM but the policy's contentType is " + ContentTypePEM)
	}
	p := &ParsedCertificate{}
	var certs []*x509.Certificate
	var key any
	if pemValue {
		p.ContentType = ContentTypePEM
		if pwd != "" {
			return nil, errors.New("a password is for PKCS#12 files; encrypted PEM keys are not supported")
		}
		rest := []byte(value)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			switch b.Type {
			case "CERTIFICATE":
				c, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					return nil, errors.New("a CERTIFICATE block is not an X.509 certificate: " + err.Error())
				}
				certs = append(certs, c)
			case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
				if key != nil {
					return nil, errors.New("the PEM file has more than one private key")
				}
				k, err := parsePrivateKey(b)
				if err != nil {
					return nil, err
				}
				key = k
			default:
				return nil, errors.New("the PEM file has a " + oneLine(b.Type) + " block: only certificates and one unencrypted private key are accepted")
			}
		}
		if len(strings.TrimSpace(string(rest))) != 0 {
			return nil, errors.New("the PEM file has data that is not a PEM block")
		}
	} else {
		p.ContentType = ContentTypePFX
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return nil, errors.New("the value is neither PEM nor a base64 PKCS#12 file")
		}
		k, leaf, cas, err := pkcs12.DecodeChain(raw, pwd)
		if err != nil {
			return nil, errors.New("the PKCS#12 file could not be read (wrong password?): " + err.Error())
		}
		key = k
		certs = append([]*x509.Certificate{leaf}, cas...)
	}
	if key == nil {
		return nil, errors.New("the value has no private key: import a certificate with its key")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the private key is not RSA or EC")
	}
	switch k := signer.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("RSA keys have at least 2048 bits")
		}
	case *ecdsa.PrivateKey:
		if crvName(k.Curve.Params().Name) == "" {
			return nil, errors.New("EC keys are on P-256, P-384 or P-521")
		}
	default:
		return nil, errors.New("the private key is not RSA or EC")
	}
	p.Key = signer
	for _, c := range certs {
		if pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(signer.Public()) && p.Leaf == nil {
			p.Leaf = c
		} else {
			p.Chain = append(p.Chain, c)
		}
	}
	if p.Leaf == nil {
		return nil, errors.New("no certificate matches the private key")
	}
	if p.ContentType == ContentTypePEM {
		der, err := x509.MarshalPKCS8PrivateKey(signer)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		for _, c := range append([]*x509.Certificate{p.Leaf}, p.Chain...) {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		p.SecretValue = b.String()
	} else {
		// As Key Vault answers: no password, the legacy encryption every
		// PKCS#12 reader knows.
		pfx, err := pkcs12.LegacyDES.WithRand(rand.Reader).Encode(signer, p.Leaf, p.Chain, "")
		if err != nil {
			return nil, err
		}
		p.SecretValue = base64.StdEncoding.EncodeToString(pfx)
	}
	if len(p.SecretValue) > MaxValueBytes*4 {
		return nil, errors.New("the certificate is too large")
	}
	return p, nil
}

func parsePrivateKey(b *pem.Block) (any, error) {
	if _, ok := b.Headers["Proc-Type"]; ok {
		return nil, errors.New("encrypted PEM keys are not supported: decrypt the key or import a PKCS#12 file with its password")
	}
	var k any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, errors.New("the " + b.Type + " block could not be read: " + err.Error())
	}
	return k, nil
}

func crvName(n string) string {
	switch n {
	case "P-256", "P-384", "P-521":
		return n
	}
	return ""
}

// certRoute dispatches:
//
//	certificates                          GET (list)
//	certificates/{name}[/]                GET (latest) DELETE
//	certificates/{name}/import            POST
//	certificates/{name}/versions          GET
//	certificates/{name}/{version}         GET
//	deletedcertificates                   GET (list)
//	deletedcertificates/{name}            GET DELETE (purge)
//	deletedcertificates/{name}/recover    POST
func (o *operation) certRoute(segs []string) {
	m := o.r.Method
	deleted := segs[0] == "deletedcertificates"
	if len(segs) == 1 {
		if m != http.MethodGet {
			o.methodNotAllowed()
			return
		}
		o.certList(deleted)
		return
	}
	name := segs[1]
	if len(segs) > 3 || !ValidSecretName(name) {
		if name == "issuers" || name == "contacts" || name == "restore" {
			o.notSupported("Certificate issuers, contacts and restore are")
			return
		}
		o.fail(errBadParameter("The request URI contains an invalid name: %s. A certificate name is 1-127 letters, digits and dashes.", oneLine(name)))
		return
	}
	if deleted {
		o.certDeleted(name, segs[2:])
		return
	}
	if len(segs) == 2 {
		switch m {
		case http.MethodGet:
			o.certGet(name, "")
		case http.MethodDelete:
			o.certDelete(name)
		default:
			o.methodNotAllowed()
		}
		return
	}
	switch sub := segs[2]; {
	case sub == "import":
		if m != http.MethodPost {
			o.methodNotAllowed()
			return
		}
		o.certImport(name)
	case sub == "versions":
		if m != http.MethodGet {
			o.methodNotAllowed()
			return
		}
		o.certVersions(name)
	case sub == "create" || sub == "pending" || sub == "policy" || sub == "backup":
		o.notSupported("Creating certificates (issuance), policies and backup are")
	case !versionRE.MatchString(sub):
		o.fail(errBadParameter("The request URI contains an invalid version: %s.", oneLine(sub)))
	case m == http.MethodGet:
		o.certGet(name, strings.ToLower(sub))
	default:
		o.methodNotAllowed()
	}
}

func (o *operation) notSupported(what string) {
	o.fail(&kvError{http.StatusNotImplemented, "NotSupported", what + " not supported by this vault: import certificates (PEM or PKCS#12).", ""})
}

// objectScope is the ARM scope of a certificate or key (kind
// "certificates", "keys").
func (o *operation) objectScope(kind, name string) string {
	return o.v.ResourceID + "/" + kind + "/" + strings.ToLower(name)
}

func (o *operation) allowedOn(kind, name, action string) bool {
	scope := o.v.ResourceID
	if name != "" {
		scope = o.objectScope(kind, name)
	}
	if e := o.h.authorize(o.r.Context(), o.c, o.v, scope, action); e != nil {
		o.fail(e)
		return false
	}
	return true
}

func errCertNotFound(name, version string) *kvError {
	id := name
	if version != "" {
		id += "/" + version
	}
	return &kvError{http.StatusNotFound, "CertificateNotFound", "A certificate with (name/id) " + id + " was not found in this key vault. If you recently deleted this certificate you may be able to recover it using the correct recovery command.", ""}
}

func errKeyNotFound(name, version string) *kvError {
	id := name
	if version != "" {
		id += "/" + version
	}
	return &kvError{http.StatusNotFound, "KeyNotFound", "A key with (name/id) " + id + " was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.", ""}
}

func (o *operation) certImport(name string) {
	named(o.w, "cert-import")
	if !o.allowedOn("certificates", name, ActionCertImport) {
		return
	}
	var b importBody
	if e := decodeStrict(o.r.Body, &b); e != nil {
		o.fail(e)
		return
	}
	if b.Value == nil || *b.Value == "" {
		o.fail(errBadParameter("The value of the certificate is required."))
		return
	}
	if e := checkCommon(nil, b.Tags, nil); e != nil {
		o.fail(e)
		return
	}
	var ct, pwd string
	if b.Policy != nil && b.Policy.SecretProps != nil && b.Policy.SecretProps.ContentType != nil {
		ct = *b.Policy.SecretProps.ContentType
	}
	if b.Password != nil {
		pwd = *b.Password
	}
	p, err := ParseCertificate(*b.Value, pwd, ct)
	if err != nil {
		o.fail(errBadParameter("The certificate could not be imported: %s", oneLine(err.Error())))
		return
	}
	now := o.now()
	enabled := true
	if b.Attributes != nil && b.Attributes.Enabled != nil {
		enabled = *b.Attributes.Enabled
	}
	ver := newVersion()
	cv := store.CertificateVersion{Version: ver, DER: p.Leaf.Raw, ContentType: p.ContentType, Enabled: enabled,
		NotBefore: p.Leaf.NotBefore.UTC(), Expires: p.Leaf.NotAfter.UTC(), Created: now, Updated: now}
	if b.Tags != nil && len(*b.Tags) > 0 {
		cv.Tags = *b.Tags
	}
	nbf, exp := cv.NotBefore, cv.Expires
	sv := store.SecretVersion{Version: ver, Value: p.SecretValue, ContentType: p.ContentType, Enabled: enabled,
		NotBefore: &nbf, Expires: &exp, Created: now, Updated: now, Managed: true, Tags: cv.Tags}
	err = o.h.cfg.Store.ImportCertificate(o.v.Name, name, cv, sv,
		store.SecretLimits{SecretsPerVault: SecretsPerVault, VersionsPerSecret: min(VersionsPerSecret, MaxCertificateVersions)}, now)
	switch {
	case errors.Is(err, store.ErrSecretDeleted):
		o.fail(&kvError{http.StatusConflict, "Conflict", "Certificate " + name + " is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the certificate can only be recovered or purged.", "ObjectIsDeletedButRecoverable"})
		return
	case errors.Is(err, store.ErrNameTaken):
		o.fail(&kvError{http.StatusConflict, "Conflict", "A secret named " + name + " exists: a certificate's secret takes its name. Choose another name.", ""})
		return
	case errors.Is(err, store.ErrLimit):
		o.fail(&kvError{http.StatusForbidden, "Forbidden", strings.TrimPrefix(err.Error(), store.ErrLimit.Error()+": "), "QuotaExceeded"})
		return
	case err != nil:
		o.internal("import certificate", err)
		return
	}
	c, err := o.h.cfg.Store.Certificate(o.v.Name, name, false, now)
	if err != nil {
		o.internal("read certificate", err)
		return
	}
	o.h.cfg.Log.Info("certificate imported", "vault", o.v.Name, "certificate", name, "version", ver, "oid", o.c.objectID)
	writeJSON(o.w, http.StatusOK, o.certBundle(c, c.Version(ver)))
}

func (o *operation) certGet(name, version string) {
	named(o.w, "cert-get")
	if !o.allowedOn("certificates", name, ActionCertRead) {
		return
	}
	c, err := o.h.cfg.Store.Certificate(o.v.Name, name, false, o.now())
	if err != nil {
		o.storeFail(err, errCertNotFound(name, version), "get certificate")
		return
	}
	cv := c.Version(version)
	if cv == nil {
		o.fail(errCertNotFound(name, version))
		return
	}
	writeJSON(o.w, http.StatusOK, o.certBundle(c, cv))
}

func (o *operation) certList(deleted bool) {
	named(o.w, map[bool]string{false: "cert-list", true: "cert-list-deleted"}[deleted])
	if !o.allowedOn("certificates", "", ActionCertRead) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	cs, err := o.h.cfg.Store.Certificates(o.v.Name, deleted, o.now())
	if err != nil {
		o.internal("list certificates", err)
		return
	}
	items := make([]map[string]any, 0, len(cs))
	for i := range cs {
		it := o.certItem(&cs[i], cs[i].Latest(), false)
		if deleted {
			o.addDeletion(it, "deletedcertificates", &cs[i])
		}
		items = append(items, it)
	}
	o.writePage(items, size, off)
}

func (o *operation) certVersions(name string) {
	named(o.w, "cert-versions")
	if !o.allowedOn("certificates", name, ActionCertRead) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	c, err := o.h.cfg.Store.Certificate(o.v.Name, name, false, o.now())
	if err != nil {
		o.storeFail(err, errCertNotFound(name, ""), "list certificate versions")
		return
	}
	items := make([]map[string]any, 0, len(c.Versions))
	for i := range c.Versions {
		items = append(items, o.certItem(c, &c.Versions[i], true))
	}
	o.writePage(items, size, off)
}

func (o *operation) certDelete(name string) {
	named(o.w, "cert-delete")
	if !o.allowedOn("certificates", name, ActionCertDelete) {
		return
	}
	now := o.now()
	c, err := o.h.cfg.Store.DeleteCertificate(o.v.Name, name, now, now.Add(time.Duration(o.v.SoftDeleteRetentionDays)*24*time.Hour))
	if err != nil {
		o.storeFail(err, errCertNotFound(name, ""), "delete certificate")
		return
	}
	o.h.cfg.Log.Info("certificate deleted", "vault", o.v.Name, "certificate", name, "oid", o.c.objectID)
	b := o.certBundle(c, c.Latest())
	o.addDeletion(b, "deletedcertificates", c)
	writeJSON(o.w, http.StatusOK, b)
}

func (o *operation) addDeletion(m map[string]any, kind string, c *store.VaultCertificate) {
	m["recoveryId"] = o.h.VaultURI(o.v.Name) + kind + "/" + c.Name
	if c.Deleted != nil {
		m["deletedDate"] = c.Deleted.DeletedDate.Unix()
		m["scheduledPurgeDate"] = c.Deleted.ScheduledPurgeDate.Unix()
	}
}

func (o *operation) certDeleted(name string, rest []string) {
	m := o.r.Method
	now := o.now()
	notFound := &kvError{http.StatusNotFound, "CertificateNotFound", "Deleted Certificate not found: " + name, ""}
	switch {
	case len(rest) == 0 && m == http.MethodGet:
		named(o.w, "cert-get-deleted")
		if !o.allowedOn("certificates", name, ActionCertRead) {
			return
		}
		c, err := o.h.cfg.Store.Certificate(o.v.Name, name, true, now)
		if err != nil {
			o.storeFail(err, notFound, "get deleted certificate")
			return
		}
		b := o.certBundle(c, c.Latest())
		o.addDeletion(b, "deletedcertificates", c)
		writeJSON(o.w, http.StatusOK, b)
	case len(rest) == 0 && m == http.MethodDelete:
		named(o.w, "cert-purge")
		if !o.allowedOn("certificates", name, ActionCertPurge) {
			return
		}
		if o.v.PurgeProtection {
			o.fail(&kvError{http.StatusForbidden, "Forbidden", "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.", "PurgeProtectionEnabled"})
			return
		}
		if err := o.h.cfg.Store.PurgeCertificate(o.v.Name, name, now); err != nil {
			o.storeFail(err, notFound, "purge certificate")
			return
		}
		o.h.cfg.Log.Info("certificate purged", "vault", o.v.Name, "certificate", name, "oid", o.c.objectID)
		o.w.WriteHeader(http.StatusNoContent)
	case len(rest) == 1 && rest[0] == "recover" && m == http.MethodPost:
		named(o.w, "cert-recover")
		if !o.allowedOn("certificates", name, ActionCertRecover) {
			return
		}
		c, err := o.h.cfg.Store.RecoverCertificate(o.v.Name, name, now)
		if err != nil {
			o.storeFail(err, notFound, "recover certificate")
			return
		}
		o.h.cfg.Log.Info("certificate recovered", "vault", o.v.Name, "certificate", name, "oid", o.c.objectID)
		writeJSON(o.w, http.StatusOK, o.certBundle(c, c.Latest()))
	case len(rest) <= 1:
		o.methodNotAllowed()
	default:
		o.fail(&kvError{http.StatusNotFound, "NotFound", "The requested path was not found.", ""})
	}
}

func (o *operation) objectID(kind, name, version string) string {
	id := o.h.VaultURI(o.v.Name) + kind + "/" + name
	if version != "" {
		id += "/" + version
	}
	return id
}

func (o *operation) certAttributes(cv *store.CertificateVersion) map[string]any {
	a := o.attributes(&store.SecretVersion{Enabled: cv.Enabled, Created: cv.Created, Updated: cv.Updated, NotBefore: &cv.NotBefore, Expires: &cv.Expires})
	return a
}

func (o *operation) certItem(c *store.VaultCertificate, cv *store.CertificateVersion, withVersion bool) map[string]any {
	ver := ""
	if withVersion {
		ver = cv.Version
	}
	sum := sha1.Sum(cv.DER)
	it := map[string]any{"id": o.objectID("certificates", c.Name, ver), "x5t": base64.RawURLEncoding.EncodeToString(sum[:]),
		"attributes": o.certAttributes(cv)}
	if len(cv.Tags) > 0 {
		it["tags"] = cv.Tags
	}
	return it
}

// certBundle is a CertificateBundle: the certificate (cer), the ids of its
// key and secret, and the policy an imported certificate has.
func (o *operation) certBundle(c *store.VaultCertificate, cv *store.CertificateVersion) map[string]any {
	b := o.certItem(c, cv, true)
	b["kid"] = o.objectID("keys", c.Name, cv.Version)
	b["sid"] = o.objectID("secrets", c.Name, cv.Version)
	b["cer"] = base64.StdEncoding.EncodeToString(cv.DER)
	keyProps := map[string]any{"exportable": true, "reuse_key": false}
	if cert, err := x509.ParseCertificate(cv.DER); err == nil {
		switch k := cert.PublicKey.(type) {
		case *rsa.PublicKey:
			keyProps["kty"], keyProps["key_size"] = "RSA", k.N.BitLen()
		case *ecdsa.PublicKey:
			keyProps["kty"], keyProps["crv"] = "EC", k.Curve.Params().Name
		}
		b["policy"] = map[string]any{
			"id":           o.objectID("certificates", c.Name, "policy"),
			"key_props":    keyProps,
			"secret_props": map[string]any{"contentType": cv.ContentType},
			"x509_props":   map[string]any{"subject": cert.Subject.String()},
			"issuer":       map[string]any{"name": "Unknown"},
			"attributes":   map[string]any{"enabled": true, "created": cv.Created.Unix(), "updated": cv.Updated.Unix()},
		}
	}
	return b
}

// keyRoute serves the keys of certificates (a certificate's key has its
// name and versions):
//
//	keys                     GET (list)
//	keys/{name}[/]           GET (latest)
//	keys/{name}/versions     GET
//	keys/{name}/{version}    GET
func (o *operation) keyRoute(segs []string) {
	if o.r.Method != http.MethodGet {
		o.fail(&kvError{http.StatusNotImplemented, "NotSupported", "This vault serves the keys of certificates, read-only: creating, importing and using keys are not supported.", ""})
		return
	}
	if len(segs) == 1 {
		o.keyList()
		return
	}
	name := segs[1]
	if len(segs) > 3 || !ValidSecretName(name) {
		o.fail(errBadParameter("The request URI contains an invalid name: %s. A key name is 1-127 letters, digits and dashes.", oneLine(name)))
		return
	}
	switch {
	case len(segs) == 2:
		o.keyGet(name, "")
	case segs[2] == "versions":
		o.keyVersions(name)
	case !versionRE.MatchString(segs[2]):
		o.fail(errBadParameter("The request URI contains an invalid version: %s.", oneLine(segs[2])))
	default:
		o.keyGet(name, strings.ToLower(segs[2]))
	}
}

func (o *operation) keyGet(name, version string) {
	named(o.w, "key-get")
	if !o.allowedOn("keys", name, ActionKeyRead) {
		return
	}
	c, err := o.h.cfg.Store.Certificate(o.v.Name, name, false, o.now())
	if err != nil {
		o.storeFail(err, errKeyNotFound(name, version), "get key")
		return
	}
	cv := c.Version(version)
	if cv == nil {
		o.fail(errKeyNotFound(name, version))
		return
	}
	jwk, err := publicJWK(cv.DER)
	if err != nil {
		o.internal("read certificate key", err)
		return
	}
	jwk["kid"] = o.objectID("keys", c.Name, cv.Version)
	b := o.keyItem(c, cv, true)
	delete(b, "kid")
	b["key"] = jwk
	writeJSON(o.w, http.StatusOK, b)
}

func (o *operation) keyItem(c *store.VaultCertificate, cv *store.CertificateVersion, withVersion bool) map[string]any {
	ver := ""
	if withVersion {
		ver = cv.Version
	}
	a := o.certAttributes(cv)
	a["exportable"] = true
	it := map[string]any{"kid": o.objectID("keys", c.Name, ver), "attributes": a, "managed": true}
	if len(cv.Tags) > 0 {
		it["tags"] = cv.Tags
	}
	return it
}

func (o *operation) keyList() {
	named(o.w, "key-list")
	if !o.allowedOn("keys", "", ActionKeyRead) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	cs, err := o.h.cfg.Store.Certificates(o.v.Name, false, o.now())
	if err != nil {
		o.internal("list keys", err)
		return
	}
	items := make([]map[string]any, 0, len(cs))
	for i := range cs {
		items = append(items, o.keyItem(&cs[i], cs[i].Latest(), false))
	}
	o.writePage(items, size, off)
}

func (o *operation) keyVersions(name string) {
	named(o.w, "key-versions")
	if !o.allowedOn("keys", name, ActionKeyRead) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	c, err := o.h.cfg.Store.Certificate(o.v.Name, name, false, o.now())
	if err != nil {
		o.storeFail(err, errKeyNotFound(name, ""), "list key versions")
		return
	}
	items := make([]map[string]any, 0, len(c.Versions))
	for i := range c.Versions {
		items = append(items, o.keyItem(c, &c.Versions[i], true))
	}
	o.writePage(items, size, off)
}

// publicJWK is the certificate's public key as Key Vault's JsonWebKey.
func publicJWK(der []byte) (map[string]any, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "key_ops": []string{"sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey"},
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}, nil
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // uncompressed: 0x04 || x || y
		if err != nil {
			return nil, err
		}
		size := (len(point) - 1) / 2
		return map[string]any{"kty": "EC", "key_ops": []string{"sign", "verify"}, "crv": k.Curve.Params().Name,
			"x": b64(point[1 : 1+size]), "y": b64(point[1+size:])}, nil
	}
	return nil, errors.New("certificate key is not RSA or EC")
}
