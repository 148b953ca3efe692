package sts

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
)

const vaultType = "Microsoft.KeyVault/vaults"

// Accepted api-version values of Microsoft.KeyVault (armkeyvault sends
// 2024-11-01; az keyvault the newest it knows).
var vaultAPIVersions = []string{"2019-09-01", "2021-06-01-preview", "2021-10-01", "2021-11-01-preview", "2022-02-01-preview", "2022-07-01", "2022-11-01", "2023-02-01", "2023-07-01", "2024-04-01-preview", "2024-11-01", "2024-12-01-preview", "2025-05-01"}

// isVaultPath reports whether an ARM path (segments from "subscriptions")
// is under Microsoft.KeyVault, at subscription or resource-group scope.
func isVaultPath(segs []string) bool {
	eq := strings.EqualFold
	switch {
	case len(segs) >= 4 && eq(segs[2], "providers"):
		return eq(segs[3], "Microsoft.KeyVault")
	case len(segs) >= 6 && eq(segs[2], "resourceGroups") && eq(segs[4], "providers"):
		return eq(segs[5], "Microsoft.KeyVault")
	}
	return false
}

// VaultResourceID is the ARM id of a vault.
func VaultResourceID(sub, rg, name string) string {
	return "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/" + vaultType + "/" + strings.ToLower(name)
}

type armVaultBody struct {
	Location   *string           `json:"location"`
	Tags       map[string]string `json:"tags"`
	Properties *struct {
		TenantID *string `json:"tenantId"`
		SKU      *struct {
			Family string `json:"family"`
			Name   string `json:"name"`
		} `json:"sku"`
		AccessPolicies            []json.RawMessage `json:"accessPolicies"`
		EnableRbacAuthorization   *bool             `json:"enableRbacAuthorization"`
		EnableSoftDelete          *bool             `json:"enableSoftDelete"`
		SoftDeleteRetentionInDays *int              `json:"softDeleteRetentionInDays"`
		EnablePurgeProtection     *bool             `json:"enablePurgeProtection"`
		CreateMode                *string           `json:"createMode"`
	} `json:"properties"`
}

// serveVaultARM handles Microsoft.KeyVault:
//
//	/subscriptions/{s}/providers/Microsoft.KeyVault/vaults                       GET (list)
//	/subscriptions/{s}/providers/Microsoft.KeyVault/checkNameAvailability        POST
//	/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults   GET (list)
//	  …/vaults/{name}                                                            PUT GET PATCH DELETE
//
// Every route is authorized by Azure RBAC at its scope, with Key Vault's
// control-plane actions (Microsoft.KeyVault/vaults/read, write, delete).
func (s *mgmt) serveVaultARM(w http.ResponseWriter, r *http.Request, c *caller, sub string, rest []string, q url.Values) {
	eq := strings.EqualFold
	// allowed checks the method and authorizes action at scope.
	allowed := func(method, action, scope string) bool {
		if method != "" && r.Method != method {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return false
		}
		sc, err := rbac.ParseScope(scope)
		if err != nil {
			writeARMError(w, armError{400, "InvalidResourceName", "The resource name is invalid: " + err.Error()})
			return false
		}
		if ae := s.authorize(c, action, sc); ae != nil {
			writeARMError(w, *ae)
			return false
		}
		return true
	}
	switch {
	case len(rest) == 3 && eq(rest[0], "providers") && eq(rest[2], "vaults"):
		if allowed(http.MethodGet, vaultType+"/read", "/subscriptions/"+sub) {
			s.listVaults(w, r, c, "/subscriptions/"+sub+"/resourcegroups/", q)
		}
	case len(rest) == 3 && eq(rest[0], "providers") && eq(rest[2], "checkNameAvailability"):
		if allowed(http.MethodPost, "Microsoft.KeyVault/checkNameAvailability/read", "/subscriptions/"+sub) {
			s.checkVaultName(w, r)
		}
	case len(rest) == 5 && eq(rest[0], "resourceGroups") && eq(rest[4], "vaults"):
		if allowed(http.MethodGet, vaultType+"/read", "/subscriptions/"+sub+"/resourceGroups/"+rest[1]) {
			s.listVaults(w, r, c, "/subscriptions/"+sub+"/resourcegroups/"+strings.ToLower(rest[1])+"/providers/microsoft.keyvault/vaults/", q)
		}
	case len(rest) == 6 && eq(rest[0], "resourceGroups") && eq(rest[4], "vaults"):
		action := map[string]string{http.MethodGet: "/read", http.MethodPut: "/write", http.MethodPatch: "/write", http.MethodDelete: "/delete"}[r.Method]
		if action == "" {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		if !keyvault.ValidVaultName(rest[5]) {
			writeARMError(w, armError{400, "VaultNameNotValid", "The vault name '" + truncate(rest[5], 64) + "' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens."})
			return
		}
		if allowed("", vaultType+action, VaultResourceID(sub, rest[1], rest[5])) {
			s.serveVault(w, r, c, sub, rest[1], rest[5])
		}
	default:
		writeARMError(w, armError{404, "NotFound", "The requested resource was not found."})
	}
}

func (s *mgmt) vaultJSON(v *store.Vault) map[string]any {
	props := map[string]any{
		"sku":                          map[string]string{"family": "A", "name": v.SKU},
		"tenantId":                     v.TenantID,
		"accessPolicies":               []any{},
		"enabledForDeployment":         false,
		"enabledForDiskEncryption":     false,
		"enabledForTemplateDeployment": false,
		"enableSoftDelete":             true,
		"softDeleteRetentionInDays":    v.SoftDeleteRetentionDays,
		"enableRbacAuthorization":      true,
		"vaultUri":                     s.vaults.VaultURI(v.Name),
		"provisioningState":            "Succeeded",
		"publicNetworkAccess":          "Enabled",
	}
	if v.PurgeProtection {
		props["enablePurgeProtection"] = true
	}
	tags := v.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{"id": v.ResourceID, "name": v.Name, "type": vaultType, "location": v.Location, "tags": tags, "properties": props}
}

func vaultNotFound(name, rg string) armError {
	return armError{404, "ResourceNotFound", "The Resource '" + vaultType + "/" + name + "' under resource group '" + rg + "' was not found."}
}

func (s *mgmt) serveVault(w http.ResponseWriter, r *http.Request, c *caller, sub, rg, name string) {
	if !keyvault.ValidVaultName(name) {
		writeARMError(w, armError{400, "VaultNameNotValid", "The vault name '" + truncate(name, 64) + "' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens."})
		return
	}
	if err := validResourceGroup(rg); err != nil {
		writeARMError(w, armErrorFor(err))
		return
	}
	key := strings.ToLower(name)
	rid := VaultResourceID(sub, rg, key)
	mine := func(v *store.Vault) bool {
		return v != nil && strings.EqualFold(v.ResourceID, rid) && v.TenantID == c.tenantID
	}
	switch r.Method {
	case http.MethodGet:
		v, err := s.store.Vault(key)
		if err != nil || !mine(v) {
			writeARMError(w, vaultNotFound(name, rg))
			return
		}
		writeJSON(w, 200, s.vaultJSON(v))
	case http.MethodPut, http.MethodPatch:
		var body armVaultBody
		if err := readBody(r, &body); err != nil {
			writeARMError(w, armError{400, "InvalidRequestContent", err.Error()})
			return
		}
		created := false
		v, err := s.store.PutVault(key, func(cur *store.Vault) (*store.Vault, error) {
			if cur != nil && !mine(cur) {
				return nil, armError{409, "VaultAlreadyExists", "The vault name '" + key + "' is already in use. Vault names are globally unique so it is possible that the name is already taken."}
			}
			if cur == nil && r.Method == http.MethodPatch {
				return nil, vaultNotFound(name, rg)
			}
			next := store.Vault{Name: key, TenantID: c.tenantID, Subscription: sub, ResourceGroup: rg, ResourceID: rid, SKU: "standard", SoftDeleteRetentionDays: keyvault.DefaultRetentionDay, Created: s.cfg.Now().UTC()}
			if cur != nil {
				next = *cur
			} else {
				created = true
			}
			if err := applyVaultBody(&next, cur, &body, c, r.Method == http.MethodPut); err != nil {
				return nil, err
			}
			return &next, nil
		})
		var ae armError
		switch {
		case errors.As(err, &ae):
			writeARMError(w, ae)
			return
		case err != nil:
			writeARMError(w, armErrorFor(err))
			return
		}
		if created {
			s.log.Info("vault created", "id", v.ResourceID, "by", c.clientID)
		}
		writeJSON(w, 200, s.vaultJSON(v))
	case http.MethodDelete:
		v, err := s.store.Vault(key)
		if err != nil || !mine(v) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := s.store.DeleteVault(key); err != nil && !errors.Is(err, store.ErrNotFound) {
			writeARMError(w, armErrorFor(err))
			return
		}
		s.log.Info("vault deleted", "id", v.ResourceID, "by", c.clientID)
		w.WriteHeader(http.StatusOK)
	default:
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
	}
}

func (e armError) Error() string { return e.code + ": " + e.message }

// applyVaultBody applies a PUT (full) or PATCH (partial) body to v, cur
// being the stored vault (nil on create). podid's vaults authorize by
// Azure RBAC only: access policies are refused, not ignored, so nobody
// believes a policy protects a secret.
func applyVaultBody(v *store.Vault, cur *store.Vault, b *armVaultBody, c *caller, put bool) error {
	bad := func(format string, args ...any) error {
		return armError{400, "BadRequest", fmt.Sprintf(format, args...)}
	}
	if b.Location != nil {
		loc := strings.ToLower(strings.ReplaceAll(*b.Location, " ", ""))
		if loc == "" || len(loc) > 64 {
			return bad("The location is invalid.")
		}
		if cur != nil && cur.Location != loc {
			return armError{400, "LocationNotAvailableForResourceType", "The location of a vault cannot change."}
		}
		v.Location = loc
	} else if put {
		return armError{400, "LocationRequired", "The location property is required for this definition."}
	}
	if b.Tags != nil || put {
		if len(b.Tags) > 50 {
			return bad("A resource has at most 50 tags.")
		}
		v.Tags = b.Tags
	}
	p := b.Properties
	if p == nil {
		if put {
			return bad("The request body must contain properties with tenantId and sku.")
		}
		return nil
	}
	if p.TenantID != nil && !strings.EqualFold(*p.TenantID, c.tenantID) {
		return bad("The tenant '%s' of the vault is not the tenant '%s' of the caller and subscription.", truncate(*p.TenantID, 64), c.tenantID)
	}
	if put && (p.TenantID == nil || p.SKU == nil) {
		return bad("The properties tenantId and sku are required.")
	}
	if p.SKU != nil {
		n := strings.ToLower(p.SKU.Name)
		if (n != "standard" && n != "premium") || !strings.EqualFold(p.SKU.Family, "A") {
			return bad("The sku is invalid: family 'A', name 'standard' or 'premium'.")
		}
		v.SKU = n
	}
	if (p.EnableRbacAuthorization != nil && !*p.EnableRbacAuthorization) || len(p.AccessPolicies) > 0 {
		return armError{400, "AccessPolicyVaultNotSupported", "podid's vaults authorize by Azure RBAC only: create the vault with properties.enableRbacAuthorization true (az keyvault create --enable-rbac-authorization true) and grant Key Vault roles with role assignments instead of access policies."}
	}
	if p.EnableSoftDelete != nil && !*p.EnableSoftDelete {
		return bad("Soft delete cannot be disabled: every vault keeps deleted secrets recoverable for its retention period.")
	}
	if p.CreateMode != nil && !strings.EqualFold(*p.CreateMode, "default") {
		return bad("createMode '%s' is not supported: deleted vaults are not kept, so there is nothing to recover.", truncate(*p.CreateMode, 32))
	}
	if p.SoftDeleteRetentionInDays != nil {
		d := *p.SoftDeleteRetentionInDays
		if d < 7 || d > 90 {
			return bad("softDeleteRetentionInDays must be between 7 and 90.")
		}
		if cur != nil && cur.SoftDeleteRetentionDays != d {
			return bad("softDeleteRetentionInDays cannot change once the vault exists.")
		}
		v.SoftDeleteRetentionDays = d
	}
	if p.EnablePurgeProtection != nil {
		if !*p.EnablePurgeProtection && cur != nil && cur.PurgeProtection {
			return bad("Purge protection cannot be disabled once enabled.")
		}
		v.PurgeProtection = *p.EnablePurgeProtection
	}
	return nil
}

var vaultRGRE = armRE

func validResourceGroup(rg string) error {
	if !vaultRGRE.MatchString(rg) || len(rg) > 90 || strings.HasSuffix(rg, ".") {
		return invalid("resource group name %q is invalid", truncate(rg, 100))
	}
	return nil
}

func (s *mgmt) listVaults(w http.ResponseWriter, r *http.Request, c *caller, prefix string, q url.Values) {
	vs, err := s.store.VaultsUnder(prefix)
	if err != nil {
		writeARMError(w, armErrorFor(err))
		return
	}
	items := []map[string]any{}
	for i := range vs {
		if vs[i].TenantID == c.tenantID && strings.Contains(strings.ToLower(vs[i].ResourceID), "/providers/microsoft.keyvault/vaults/") {
			items = append(items, s.vaultJSON(&vs[i]))
		}
	}
	s.writePage(w, r, items, q)
}

// checkVaultName answers armkeyvault's CheckNameAvailability.
func (s *mgmt) checkVaultName(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := readBody(r, &body); err != nil {
		writeARMError(w, armError{400, "InvalidRequestContent", err.Error()})
		return
	}
	if !strings.EqualFold(body.Type, vaultType) {
		writeARMError(w, armError{400, "BadRequest", "type must be " + vaultType})
		return
	}
	switch _, err := s.store.Vault(strings.ToLower(body.Name)); {
	case !keyvault.ValidVaultName(body.Name):
		writeJSON(w, 200, map[string]any{"nameAvailable": false, "reason": "AccountNameInvalid", "message": "Vault name must be between 3-24 alphanumeric characters, begin with a letter, end with a letter or digit, and not contain consecutive hyphens."})
	case err == nil:
		writeJSON(w, 200, map[string]any{"nameAvailable": false, "reason": "AlreadyExists", "message": "The vault name '" + strings.ToLower(body.Name) + "' is already in use."})
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, 200, map[string]any{"nameAvailable": true})
	default:
		writeARMError(w, armErrorFor(err))
	}
}
