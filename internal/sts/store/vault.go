package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Key Vault state: vaults (by lower-case name, which is globally unique as
// in Azure), secrets (one head record per name) and secret versions (one
// record each, so setting a version never rewrites the older ones).
var (
	bucketVaults        = []byte("vaults")
	bucketVaultSecrets  = []byte("vaultsecrets")  // vault/name → VaultSecret
	bucketVaultVersions = []byte("vaultversions") // vault/name/version → SecretVersion
)

// Errors of the secret lifecycle.
var (
	// ErrSecretDeleted: the secret is soft-deleted; it must be recovered or
	// purged before its name is used again.
	ErrSecretDeleted = errors.New("secret is deleted but recoverable")
	// ErrSecretNotDeleted: purge or recover of a secret that is not deleted.
	ErrSecretNotDeleted = errors.New("secret is not deleted")
	// ErrLimit: a per-vault or per-secret bound would be exceeded.
	ErrLimit = errors.New("limit exceeded")
	// ErrManaged: the secret belongs to a certificate; only the
	// certificate's operations change it.
	ErrManaged = errors.New("secret is managed by a certificate")
)

// Vault is a Key Vault (Microsoft.KeyVault/vaults).
type Vault struct {
	Name          string            `json:"name"` // lower case
	TenantID      string            `json:"tenantId"`
	Subscription  string            `json:"subscription"`
	ResourceGroup string            `json:"resourceGroup"`
	ResourceID    string            `json:"resourceId"`
	Location      string            `json:"location"`
	Tags          map[string]string `json:"tags,omitempty"`
	SKU           string            `json:"sku"`
	// SoftDeleteRetentionDays is how long deleted secrets stay recoverable.
	SoftDeleteRetentionDays int       `json:"softDeleteRetentionDays"`
	PurgeProtection         bool      `json:"purgeProtection,omitempty"`
	Created                 time.Time `json:"created"`
}

// VaultSecret is a secret's head: its versions, oldest first, and its
// deletion state.
type VaultSecret struct {
	Vault    string          `json:"vault"`
	Name     string          `json:"name"` // as first set
	Latest   string          `json:"latest"`
	Versions []string        `json:"versions"`
	Deleted  *SecretDeletion `json:"deleted,omitempty"`
}

// SecretDeletion records a soft delete.
type SecretDeletion struct {
	DeletedDate        time.Time `json:"deletedDate"`
	ScheduledPurgeDate time.Time `json:"scheduledPurgeDate"`
}

// SecretVersion is one version of a secret: its value and attributes.
type SecretVersion struct {
	Version     string            `json:"version"`
	Value       string            `json:"value"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Enabled     bool              `json:"enabled"`
	NotBefore   *time.Time        `json:"nbf,omitempty"`
	Expires     *time.Time        `json:"exp,omitempty"`
	Created     time.Time         `json:"created"`
	Updated     time.Time         `json:"updated"`
	// Managed: the secret of a certificate (its key and certificate); only
	// the certificate's operations change it.
	Managed bool `json:"managed,omitempty"`
}

// SecretLimits bound what one vault holds.
type SecretLimits struct {
	SecretsPerVault   int
	VersionsPerSecret int
}

func vaultBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketVaults, bucketVaultSecrets, bucketVaultVersions, bucketVaultCerts} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

func secretKey(vault, name string) string { return vault + "/" + strings.ToLower(name) }

// PutVault runs fn on the vault named name (nil if absent) and stores what
// it returns, in one transaction that also binds the vault's subscription
// to its tenant. A vault name belongs to one resource id: fn sees the
// record of another resource group or subscription and must refuse it.
func (s *Store) PutVault(name string, fn func(cur *Vault) (*Vault, error)) (*Vault, error) {
	var out *Vault
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, err := get[Vault](tx, bucketVaults, name)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if next.Name != name {
			return fmt.Errorf("vault name changed from %q to %q", name, next.Name)
		}
		if err := bindSubscription(tx, subscriptionOf(next.ResourceID), next.TenantID); err != nil {
			return err
		}
		out = next
		return put(tx, bucketVaults, name, next)
	})
	return out, err
}

// Vault returns the vault with the (lower-case) name.
func (s *Store) Vault(name string) (*Vault, error) {
	var v *Vault
	err := s.db.View(func(tx *bolt.Tx) (err error) { v, err = get[Vault](tx, bucketVaults, name); return })
	return v, err
}

// VaultsUnder lists vaults whose resource id starts with prefix
// (case-insensitive), sorted by resource id.
func (s *Store) VaultsUnder(prefix string) ([]Vault, error) {
	var all []Vault
	err := s.db.View(func(tx *bolt.Tx) (err error) { all, err = list[Vault](tx, bucketVaults); return })
	if err != nil {
		return nil, err
	}
	prefix = strings.ToLower(prefix)
	out := all[:0]
	for _, v := range all {
		if strings.HasPrefix(strings.ToLower(v.ResourceID), prefix) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].ResourceID) < strings.ToLower(out[j].ResourceID) })
	return out, nil
}

// DeleteVault removes a vault with all its secrets and versions in one
// transaction (ErrNotFound when absent).
func (s *Store) DeleteVault(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVaults).Get([]byte(name)) == nil {
			return ErrNotFound
		}
		for _, b := range [][]byte{bucketVaultSecrets, bucketVaultVersions, bucketVaultCerts} {
			if err := deletePrefix(tx.Bucket(b), []byte(name+"/")); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketVaults).Delete([]byte(name))
	})
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, slices.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// purgeIfDue removes a soft-deleted secret whose purge date has passed,
// reporting whether it did.
func purgeIfDue(tx *bolt.Tx, key string, h *VaultSecret, now time.Time) (bool, error) {
	if h == nil || h.Deleted == nil || now.Before(h.Deleted.ScheduledPurgeDate) {
		return false, nil
	}
	return true, purge(tx, key)
}

func purge(tx *bolt.Tx, key string) error {
	if err := deletePrefix(tx.Bucket(bucketVaultVersions), []byte(key+"/")); err != nil {
		return err
	}
	return tx.Bucket(bucketVaultSecrets).Delete([]byte(key))
}

// SetSecret adds v as the newest version of the secret name in vault
// (creating the secret), in one transaction: ErrNotFound without the vault,
// ErrSecretDeleted while a deleted secret holds the name, ErrLimit past
// lim.
// A secret a certificate manages is ErrManaged.
func (s *Store) SetSecret(vault, name string, v SecretVersion, lim SecretLimits, now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVaults).Get([]byte(vault)) == nil {
			return fmt.Errorf("vault %s: %w", vault, ErrNotFound)
		}
		if c, err := get[VaultCertificate](tx, bucketVaultCerts, certKey(vault, name)); err == nil && (c.Deleted == nil || now.Before(c.Deleted.ScheduledPurgeDate)) {
			return ErrManaged
		}
		return setSecret(tx, vault, name, v, lim, now)
	})
}

func setSecret(tx *bolt.Tx, vault, name string, v SecretVersion, lim SecretLimits, now time.Time) error {
	key := secretKey(vault, name)
	h, err := get[VaultSecret](tx, bucketVaultSecrets, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if purged, err := purgeIfDue(tx, key, h, now); err != nil {
		return err
	} else if purged {
		h = nil
	}
	if h == nil {
		n := 0
		c := tx.Bucket(bucketVaultSecrets).Cursor()
		for k, _ := c.Seek([]byte(vault + "/")); k != nil && bytes.HasPrefix(k, []byte(vault+"/")); k, _ = c.Next() {
			n++
		}
		if n >= lim.SecretsPerVault {
			return fmt.Errorf("%w: at most %d secrets per vault", ErrLimit, lim.SecretsPerVault)
		}
		h = &VaultSecret{Vault: vault, Name: name}
	}
	if h.Deleted != nil {
		return ErrSecretDeleted
	}
	if len(h.Versions) >= lim.VersionsPerSecret {
		return fmt.Errorf("%w: at most %d versions per secret", ErrLimit, lim.VersionsPerSecret)
	}
	h.Versions = append(h.Versions, v.Version)
	h.Latest = v.Version
	if err := put(tx, bucketVaultVersions, key+"/"+v.Version, v); err != nil {
		return err
	}
	return put(tx, bucketVaultSecrets, key, h)
}

// liveSecret reads a secret's head in tx: ErrNotFound when absent or
// soft-deleted (wantDeleted false), or when not deleted (wantDeleted true).
func liveSecret(tx *bolt.Tx, vault, name string, wantDeleted bool, now time.Time) (*VaultSecret, error) {
	h, err := get[VaultSecret](tx, bucketVaultSecrets, secretKey(vault, name))
	if err != nil {
		return nil, err
	}
	if h.Deleted != nil && !now.Before(h.Deleted.ScheduledPurgeDate) {
		return nil, ErrNotFound
	}
	if (h.Deleted != nil) != wantDeleted {
		return nil, ErrNotFound
	}
	return h, nil
}

// Secret returns a secret's head and one version ("" for the latest);
// ErrNotFound when the secret or version does not exist or is deleted.
func (s *Store) Secret(vault, name, version string, now time.Time) (*VaultSecret, *SecretVersion, error) {
	return s.secret(vault, name, version, false, now)
}

// DeletedSecret is Secret for a soft-deleted secret (its latest version).
func (s *Store) DeletedSecret(vault, name string, now time.Time) (*VaultSecret, *SecretVersion, error) {
	return s.secret(vault, name, "", true, now)
}

func (s *Store) secret(vault, name, version string, deleted bool, now time.Time) (h *VaultSecret, v *SecretVersion, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if h, err = liveSecret(tx, vault, name, deleted, now); err != nil {
			return err
		}
		if version == "" {
			version = h.Latest
		}
		v, err = get[SecretVersion](tx, bucketVaultVersions, secretKey(vault, name)+"/"+strings.ToLower(version))
		return err
	})
	return h, v, err
}

// UpdateSecretVersion runs fn on one version ("" for the latest) of a live
// secret and stores it, in one transaction.
func (s *Store) UpdateSecretVersion(vault, name, version string, now time.Time, fn func(*SecretVersion) error) (*VaultSecret, *SecretVersion, error) {
	var h *VaultSecret
	var v *SecretVersion
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if h, err = liveSecret(tx, vault, name, false, now); err != nil {
			return err
		}
		if version == "" {
			version = h.Latest
		}
		k := secretKey(vault, name) + "/" + strings.ToLower(version)
		if v, err = get[SecretVersion](tx, bucketVaultVersions, k); err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
		return put(tx, bucketVaultVersions, k, v)
	})
	return h, v, err
}

// SecretEntry is a secret with its latest version, as lists show it.
type SecretEntry struct {
	Head   VaultSecret
	Latest SecretVersion
}

// Secrets lists a vault's live (or, with deleted, soft-deleted) secrets
// with their latest versions, sorted by name.
func (s *Store) Secrets(vault string, deleted bool, now time.Time) ([]SecretEntry, error) {
	var out []SecretEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(vault + "/")
		c := tx.Bucket(bucketVaultSecrets).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			h, err := get[VaultSecret](tx, bucketVaultSecrets, string(k))
			if err != nil {
				return err
			}
			if (h.Deleted != nil) != deleted || (h.Deleted != nil && !now.Before(h.Deleted.ScheduledPurgeDate)) {
				continue
			}
			v, err := get[SecretVersion](tx, bucketVaultVersions, string(k)+"/"+h.Latest)
			if err != nil {
				return err
			}
			out = append(out, SecretEntry{Head: *h, Latest: *v})
		}
		return nil
	})
	return out, err
}

// SecretVersions lists the versions of a live secret, oldest first.
func (s *Store) SecretVersions(vault, name string, now time.Time) ([]SecretVersion, error) {
	var out []SecretVersion
	err := s.db.View(func(tx *bolt.Tx) error {
		h, err := liveSecret(tx, vault, name, false, now)
		if err != nil {
			return err
		}
		for _, ver := range h.Versions {
			v, err := get[SecretVersion](tx, bucketVaultVersions, secretKey(vault, name)+"/"+ver)
			if err != nil {
				return err
			}
			out = append(out, *v)
		}
		return nil
	})
	return out, err
}

// DeleteSecret soft-deletes a live secret, recoverable until purgeAt.
func (s *Store) DeleteSecret(vault, name string, now, purgeAt time.Time) (*VaultSecret, *SecretVersion, error) {
	var h *VaultSecret
	var v *SecretVersion
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if h, err = liveSecret(tx, vault, name, false, now); err != nil {
			return err
		}
		key := secretKey(vault, name)
		if v, err = get[SecretVersion](tx, bucketVaultVersions, key+"/"+h.Latest); err != nil {
			return err
		}
		h.Deleted = &SecretDeletion{DeletedDate: now, ScheduledPurgeDate: purgeAt}
		return put(tx, bucketVaultSecrets, key, h)
	})
	return h, v, err
}

// RecoverSecret undoes a soft delete.
func (s *Store) RecoverSecret(vault, name string, now time.Time) (*VaultSecret, *SecretVersion, error) {
	var h *VaultSecret
	var v *SecretVersion
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if h, err = liveSecret(tx, vault, name, true, now); err != nil {
			return err
		}
		key := secretKey(vault, name)
		if v, err = get[SecretVersion](tx, bucketVaultVersions, key+"/"+h.Latest); err != nil {
			return err
		}
		h.Deleted = nil
		return put(tx, bucketVaultSecrets, key, h)
	})
	return h, v, err
}

// PurgeSecret removes a soft-deleted secret and all its versions for good.
func (s *Store) PurgeSecret(vault, name string, now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := liveSecret(tx, vault, name, true, now); err != nil {
			return err
		}
		return purge(tx, secretKey(vault, name))
	})
}
