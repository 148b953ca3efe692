package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Certificates: one record per name with its versions inline (a version is
// a certificate and its metadata, a few KiB). A version's private key and
// the certificate as imported live in the secret of the same name and
// version (Managed), as in Key Vault; its key is the certificate's public
// key, derived on read.
var bucketVaultCerts = []byte("vaultcerts") // vault/name → VaultCertificate

// ErrNameTaken: a secret that no certificate manages holds the name.
var ErrNameTaken = errors.New("name is taken by a secret")

// VaultCertificate is a certificate: its versions, oldest first, and its
// deletion state.
type VaultCertificate struct {
	Vault    string               `json:"vault"`
	Name     string               `json:"name"` // as first imported
	Versions []CertificateVersion `json:"versions"`
	Deleted  *SecretDeletion      `json:"deleted,omitempty"`
}

// Latest is the newest version.
func (c *VaultCertificate) Latest() *CertificateVersion { return &c.Versions[len(c.Versions)-1] }

// Version returns a version by id ("" for the latest), nil if absent.
func (c *VaultCertificate) Version(v string) *CertificateVersion {
	if v == "" {
		return c.Latest()
	}
	for i := range c.Versions {
		if strings.EqualFold(c.Versions[i].Version, v) {
			return &c.Versions[i]
		}
	}
	return nil
}

// CertificateVersion is one imported certificate.
type CertificateVersion struct {
	Version string `json:"version"`
	// DER is the leaf certificate.
	DER []byte `json:"der"`
	// ContentType is the format of its secret: application/x-pkcs12 or
	// application/x-pem-file.
	ContentType string            `json:"contentType"`
	Tags        map[string]string `json:"tags,omitempty"`
	Enabled     bool              `json:"enabled"`
	NotBefore   time.Time         `json:"nbf"`
	Expires     time.Time         `json:"exp"`
	Created     time.Time         `json:"created"`
	Updated     time.Time         `json:"updated"`
}

func certKey(vault, name string) string { return vault + "/" + strings.ToLower(name) }

func liveCert(tx *bolt.Tx, vault, name string, wantDeleted bool, now time.Time) (*VaultCertificate, error) {
	c, err := get[VaultCertificate](tx, bucketVaultCerts, certKey(vault, name))
	if err != nil {
		return nil, err
	}
	if c.Deleted != nil && !now.Before(c.Deleted.ScheduledPurgeDate) {
		return nil, ErrNotFound
	}
	if (c.Deleted != nil) != wantDeleted {
		return nil, ErrNotFound
	}
	return c, nil
}

// ImportCertificate adds cv as the newest version of certificate name and
// sv (Managed, same version) as the newest version of its secret, in one
// transaction: ErrNotFound without the vault, ErrSecretDeleted while a
// deleted certificate or secret holds the name, ErrNameTaken when a secret
// no certificate manages does, ErrLimit past lim.
func (s *Store) ImportCertificate(vault, name string, cv CertificateVersion, sv SecretVersion, lim SecretLimits, now time.Time) error {
	if !sv.Managed || sv.Version != cv.Version {
		return errors.New("a certificate's secret is managed and shares its version")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVaults).Get([]byte(vault)) == nil {
			return fmt.Errorf("vault %s: %w", vault, ErrNotFound)
		}
		key := certKey(vault, name)
		c, err := get[VaultCertificate](tx, bucketVaultCerts, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if c != nil && c.Deleted != nil && !now.Before(c.Deleted.ScheduledPurgeDate) {
			c = nil // past its purge date: gone
		}
		if c == nil {
			// The name must not be a secret of its own.
			h, err := get[VaultSecret](tx, bucketVaultSecrets, secretKey(vault, name))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if h != nil && (h.Deleted == nil || now.Before(h.Deleted.ScheduledPurgeDate)) {
				return ErrNameTaken
			}
			c = &VaultCertificate{Vault: vault, Name: name}
		}
		if c.Deleted != nil {
			return ErrSecretDeleted
		}
		if len(c.Versions) >= lim.VersionsPerSecret {
			return fmt.Errorf("%w: at most %d versions per certificate", ErrLimit, lim.VersionsPerSecret)
		}
		c.Versions = append(c.Versions, cv)
		if err := setSecret(tx, vault, name, sv, lim, now); err != nil {
			return err
		}
		return put(tx, bucketVaultCerts, key, c)
	})
}

// Certificate returns a live certificate (or, with deleted, a soft-deleted
// one): ErrNotFound otherwise.
func (s *Store) Certificate(vault, name string, deleted bool, now time.Time) (*VaultCertificate, error) {
	var c *VaultCertificate
	err := s.db.View(func(tx *bolt.Tx) (err error) { c, err = liveCert(tx, vault, name, deleted, now); return })
	return c, err
}

// Certificates lists a vault's live (or soft-deleted) certificates, by name.
func (s *Store) Certificates(vault string, deleted bool, now time.Time) ([]VaultCertificate, error) {
	var out []VaultCertificate
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(vault + "/")
		c := tx.Bucket(bucketVaultCerts).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			vc, err := get[VaultCertificate](tx, bucketVaultCerts, string(k))
			if err != nil {
				return err
			}
			if (vc.Deleted != nil) != deleted || (vc.Deleted != nil && !now.Before(vc.Deleted.ScheduledPurgeDate)) {
				continue
			}
			out = append(out, *vc)
		}
		return nil
	})
	return out, err
}

// DeleteCertificate soft-deletes a live certificate and its secret,
// recoverable until purgeAt.
func (s *Store) DeleteCertificate(vault, name string, now, purgeAt time.Time) (*VaultCertificate, error) {
	var c *VaultCertificate
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if c, err = liveCert(tx, vault, name, false, now); err != nil {
			return err
		}
		c.Deleted = &SecretDeletion{DeletedDate: now, ScheduledPurgeDate: purgeAt}
		if h, err := liveSecret(tx, vault, name, false, now); err == nil {
			h.Deleted = c.Deleted
			if err := put(tx, bucketVaultSecrets, secretKey(vault, name), h); err != nil {
				return err
			}
		}
		return put(tx, bucketVaultCerts, certKey(vault, name), c)
	})
	return c, err
}

// RecoverCertificate undoes a soft delete of a certificate and its secret.
func (s *Store) RecoverCertificate(vault, name string, now time.Time) (*VaultCertificate, error) {
	var c *VaultCertificate
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if c, err = liveCert(tx, vault, name, true, now); err != nil {
			return err
		}
		c.Deleted = nil
		if h, err := liveSecret(tx, vault, name, true, now); err == nil {
			h.Deleted = nil
			if err := put(tx, bucketVaultSecrets, secretKey(vault, name), h); err != nil {
				return err
			}
		}
		return put(tx, bucketVaultCerts, certKey(vault, name), c)
	})
	return c, err
}

// PurgeCertificate removes a soft-deleted certificate and its secret for good.
func (s *Store) PurgeCertificate(vault, name string, now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := liveCert(tx, vault, name, true, now); err != nil {
			return err
		}
		if _, err := liveSecret(tx, vault, name, true, now); err == nil {
			if err := purge(tx, secretKey(vault, name)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketVaultCerts).Delete([]byte(certKey(vault, name)))
	})
}
