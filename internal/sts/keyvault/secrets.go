package keyvault

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/podid/podid/internal/sts/store"
)

// operation is one authenticated data-plane request.
type operation struct {
	h *Handler
	w http.ResponseWriter
	r *http.Request
	v *store.Vault
	c *caller
	q url.Values
}

func (o *operation) fail(e *kvError) { o.h.writeError(o.w, o.r, o.v, e) }

func (o *operation) methodNotAllowed() {
	o.fail(&kvError{http.StatusMethodNotAllowed, "MethodNotAllowed", "The method " + oneLine(o.r.Method) + " is not allowed on this path.", ""})
}

// route dispatches on the path segments:
//
//	secrets                         GET (list)
//	secrets/{name}[/]               PUT (set) GET PATCH (latest) DELETE
//	secrets/{name}/versions         GET (list versions)
//	secrets/{name}/{version}        GET PATCH
//	deletedsecrets                  GET (list)
//	deletedsecrets/{name}           GET DELETE (purge)
//	deletedsecrets/{name}/recover   POST
func (o *operation) route(segs []string) {
	if n := len(segs); n > 1 && segs[n-1] == "" {
		segs = segs[:n-1] // the SDKs send secrets/{name}/ for "latest"
	}
	switch segs[0] {
	case "certificates", "deletedcertificates":
		o.certRoute(segs)
		return
	case "keys":
		o.keyRoute(segs)
		return
	}
	m := o.r.Method
	switch {
	case len(segs) == 1 && segs[0] == "secrets":
		if m != http.MethodGet {
			o.methodNotAllowed()
			return
		}
		o.list(false)
	case len(segs) == 1 && segs[0] == "deletedsecrets":
		if m != http.MethodGet {
			o.methodNotAllowed()
			return
		}
		o.list(true)
	case len(segs) >= 2 && len(segs) <= 3 && (segs[0] == "secrets" || segs[0] == "deletedsecrets"):
		name := segs[1]
		if !ValidSecretName(name) {
			o.fail(errBadParameter("The request URI contains an invalid name: %s. A secret name is 1-127 letters, digits and dashes.", oneLine(name)))
			return
		}
		if segs[0] == "deletedsecrets" {
			o.deleted(name, segs[2:])
			return
		}
		if len(segs) == 2 {
			switch m {
			case http.MethodPut:
				o.set(name)
			case http.MethodGet:
				o.get(name, "")
			case http.MethodPatch:
				o.update(name, "")
			case http.MethodDelete:
				o.delete(name)
			default:
				o.methodNotAllowed()
			}
			return
		}
		switch sub := segs[2]; {
		case sub == "versions":
			if m != http.MethodGet {
				o.methodNotAllowed()
				return
			}
			o.versions(name)
		case sub == "backup":
			o.fail(&kvError{http.StatusNotImplemented, "NotSupported", "Backup and restore of secrets are not supported by this vault.", ""})
		case !versionRE.MatchString(sub):
			o.fail(errBadParameter("The request URI contains an invalid version: %s.", oneLine(sub)))
		case m == http.MethodGet:
			o.get(name, strings.ToLower(sub))
		case m == http.MethodPatch:
			o.update(name, strings.ToLower(sub))
		default:
			o.methodNotAllowed()
		}
	default:
		o.fail(&kvError{http.StatusNotFound, "NotFound", "The requested path was not found. This vault serves secrets, certificates (imported) and their keys.", ""})
	}
}

// scope is the ARM scope of a secret (or of the vault when name is "").
func (o *operation) scope(name string) string {
	if name == "" {
		return o.v.ResourceID
	}
	return o.v.ResourceID + "/secrets/" + strings.ToLower(name)
}

func (o *operation) allowed(name, action string) bool {
	if e := o.h.authorize(o.r.Context(), o.c, o.v, o.scope(name), action); e != nil {
		o.fail(e)
		return false
	}
	return true
}

func (o *operation) now() time.Time { return o.h.cfg.Now().UTC().Truncate(time.Second) }

// attributesIn are the attributes a caller may send. The read-only ones
// are accepted because the SDKs echo back what a GET returned, and
// ignored, as Key Vault does.
type attributesIn struct {
	Enabled   *bool  `json:"enabled"`
	NotBefore *int64 `json:"nbf"`
	Expires   *int64 `json:"exp"`

	Created         *int64  `json:"created"`
	Updated         *int64  `json:"updated"`
	RecoveryLevel   *string `json:"recoveryLevel"`
	RecoverableDays *int    `json:"recoverableDays"`
}

type setBody struct {
	Value       *string            `json:"value"`
	ContentType *string            `json:"contentType"`
	Tags        *map[string]string `json:"tags"`
	Attributes  *attributesIn      `json:"attributes"`
}

type updateBody struct {
	ContentType *string            `json:"contentType"`
	Tags        *map[string]string `json:"tags"`
	Attributes  *attributesIn      `json:"attributes"`
}

// decodeStrict reads one JSON object of at most MaxBodyBytes into v:
// unknown fields, trailing data and invalid UTF-8 are refused.
func decodeStrict(r io.Reader, v any) *kvError {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return errBadParameter("The request body could not be read.")
	}
	return parseStrict(body, v)
}

func parseStrict(body []byte, v any) *kvError {
	switch {
	case len(body) > MaxBodyBytes:
		return errBadParameter("The request body is larger than %d bytes.", MaxBodyBytes)
	case len(bytes.TrimSpace(body)) == 0:
		return errBadParameter("The request body is empty.")
	case !utf8.Valid(body):
		return errBadParameter("The request body is not valid UTF-8.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errBadParameter("The request body is not a valid JSON object of this operation: %s", oneLine(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errBadParameter("The request body has data after its JSON object.")
	}
	return nil
}

// checkCommon validates the fields set and update share.
func checkCommon(contentType *string, tags *map[string]string, a *attributesIn) *kvError {
	if contentType != nil && len(*contentType) > MaxContentType {
		return errBadParameter("contentType is longer than %d characters.", MaxContentType)
	}
	if tags != nil {
		if len(*tags) > MaxTags {
			return errBadParameter("A secret has at most %d tags.", MaxTags)
		}
		for k, v := range *tags {
			if k == "" || len(k) > MaxTagName || len(v) > MaxTagValue {
				return errBadParameter("Tag names are 1-%d characters and values at most %d.", MaxTagName, MaxTagValue)
			}
		}
	}
	if a != nil {
		for _, t := range []*int64{a.NotBefore, a.Expires} {
			if t != nil && (*t < 0 || *t > 253402300799) { // 9999-12-31
				return errBadParameter("nbf and exp are Unix times between 1970 and 9999.")
			}
		}
		if a.NotBefore != nil && a.Expires != nil && *a.Expires < *a.NotBefore {
			return errBadParameter("exp is before nbf.")
		}
	}
	return nil
}

func applyAttributes(sv *store.SecretVersion, a *attributesIn) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		sv.Enabled = *a.Enabled
	}
	if a.NotBefore != nil {
		t := time.Unix(*a.NotBefore, 0).UTC()
		sv.NotBefore = &t
	}
	if a.Expires != nil {
		t := time.Unix(*a.Expires, 0).UTC()
		sv.Expires = &t
	}
}

func (o *operation) set(name string) {
	named(o.w, "set")
	if !o.allowed(name, ActionSetSecret) {
		return
	}
	var b setBody
	if e := decodeStrict(o.r.Body, &b); e != nil {
		o.fail(e)
		return
	}
	if b.Value == nil {
		o.fail(errBadParameter("The value of the secret is required."))
		return
	}
	if len(*b.Value) > MaxValueBytes {
		o.fail(errBadParameter("The secret value is %d bytes; the maximum is %d.", len(*b.Value), MaxValueBytes))
		return
	}
	if e := checkCommon(b.ContentType, b.Tags, b.Attributes); e != nil {
		o.fail(e)
		return
	}
	now := o.now()
	sv := store.SecretVersion{Version: newVersion(), Value: *b.Value, Enabled: true, Created: now, Updated: now}
	if b.ContentType != nil {
		sv.ContentType = *b.ContentType
	}
	if b.Tags != nil && len(*b.Tags) > 0 {
		sv.Tags = *b.Tags
	}
	applyAttributes(&sv, b.Attributes)
	err := o.h.cfg.Store.SetSecret(o.v.Name, name, sv, store.SecretLimits{SecretsPerVault: SecretsPerVault, VersionsPerSecret: VersionsPerSecret}, now)
	switch {
	case errors.Is(err, store.ErrSecretDeleted):
		o.fail(&kvError{http.StatusConflict, "Conflict", "Secret " + name + " is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", "ObjectIsDeletedButRecoverable"})
		return
	case errors.Is(err, store.ErrLimit):
		o.fail(&kvError{http.StatusForbidden, "Forbidden", strings.TrimPrefix(err.Error(), store.ErrLimit.Error()+": "), "QuotaExceeded"})
		return
	case errors.Is(err, store.ErrManaged):
		o.fail(errManaged(name))
		return
	case errors.Is(err, store.ErrNotFound):
		o.fail(&kvError{http.StatusNotFound, "VaultNotFound", "The vault " + o.v.Name + " does not exist.", ""})
		return
	case err != nil:
		o.internal("set secret", err)
		return
	}
	h, got, err := o.h.cfg.Store.Secret(o.v.Name, name, sv.Version, now)
	if err != nil {
		o.internal("read secret", err)
		return
	}
	o.h.cfg.Log.Info("secret set", "vault", o.v.Name, "secret", name, "version", sv.Version, "oid", o.c.objectID)
	writeJSON(o.w, http.StatusOK, o.bundle(h, got, true))
}

func (o *operation) internal(what string, err error) {
	o.h.cfg.Log.Error("key vault "+what+" failed", "vault", o.v.Name, "err", err)
	o.fail(&kvError{http.StatusInternalServerError, "InternalServerError", "The vault could not complete the request.", ""})
}

func (o *operation) get(name, version string) {
	named(o.w, "get")
	if !o.allowed(name, ActionGetSecret) {
		return
	}
	h, sv, err := o.h.cfg.Store.Secret(o.v.Name, name, version, o.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		o.fail(errSecretNotFound(name, version))
		return
	case err != nil:
		o.internal("get secret", err)
		return
	}
	if !sv.Enabled {
		o.fail(&kvError{http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"})
		return
	}
	writeJSON(o.w, http.StatusOK, o.bundle(h, sv, true))
}

func (o *operation) update(name, version string) {
	named(o.w, "update")
	if !o.allowed(name, ActionUpdate) {
		return
	}
	var b updateBody
	if e := decodeStrict(o.r.Body, &b); e != nil {
		o.fail(e)
		return
	}
	if e := checkCommon(b.ContentType, b.Tags, b.Attributes); e != nil {
		o.fail(e)
		return
	}
	now := o.now()
	h, sv, err := o.h.cfg.Store.UpdateSecretVersion(o.v.Name, name, version, now, func(sv *store.SecretVersion) error {
		if sv.Managed {
			return errManaged(name)
		}
		if b.ContentType != nil {
			sv.ContentType = *b.ContentType
		}
		if b.Tags != nil {
			sv.Tags = *b.Tags
		}
		applyAttributes(sv, b.Attributes)
		if sv.NotBefore != nil && sv.Expires != nil && sv.Expires.Before(*sv.NotBefore) {
			return errBadParameter("exp is before nbf.")
		}
		sv.Updated = now
		return nil
	})
	var ke *kvError
	switch {
	case errors.As(err, &ke):
		o.fail(ke)
		return
	case errors.Is(err, store.ErrNotFound):
		o.fail(errSecretNotFound(name, version))
		return
	case err != nil:
		o.internal("update secret", err)
		return
	}
	o.h.cfg.Log.Info("secret updated", "vault", o.v.Name, "secret", name, "version", sv.Version, "oid", o.c.objectID)
	writeJSON(o.w, http.StatusOK, o.bundle(h, sv, false))
}

func (o *operation) delete(name string) {
	named(o.w, "delete")
	if !o.allowed(name, ActionDelete) {
		return
	}
	now := o.now()
	if _, sv, err := o.h.cfg.Store.Secret(o.v.Name, name, "", now); err == nil && sv.Managed {
		o.fail(errManaged(name))
		return
	}
	h, sv, err := o.h.cfg.Store.DeleteSecret(o.v.Name, name, now, now.Add(time.Duration(o.v.SoftDeleteRetentionDays)*24*time.Hour))
	switch {
	case errors.Is(err, store.ErrNotFound):
		o.fail(errSecretNotFound(name, ""))
		return
	case err != nil:
		o.internal("delete secret", err)
		return
	}
	o.h.cfg.Log.Info("secret deleted", "vault", o.v.Name, "secret", name, "oid", o.c.objectID)
	writeJSON(o.w, http.StatusOK, o.deletedBundle(h, sv))
}

// deleted serves deletedsecrets/{name}[/recover].
func (o *operation) deleted(name string, rest []string) {
	m := o.r.Method
	now := o.now()
	switch {
	case len(rest) == 0 && m == http.MethodGet:
		named(o.w, "get-deleted")
		if !o.allowed(name, ActionReadMetadata) {
			return
		}
		h, sv, err := o.h.cfg.Store.DeletedSecret(o.v.Name, name, now)
		if err != nil {
			o.storeFail(err, errDeletedNotFound(name), "get deleted secret")
			return
		}
		writeJSON(o.w, http.StatusOK, o.deletedBundle(h, sv))
	case len(rest) == 0 && m == http.MethodDelete:
		named(o.w, "purge")
		if !o.allowed(name, ActionPurge) {
			return
		}
		if _, sv, err := o.h.cfg.Store.DeletedSecret(o.v.Name, name, now); err == nil && sv.Managed {
			o.fail(errManaged(name))
			return
		}
		if o.v.PurgeProtection {
			o.fail(&kvError{http.StatusForbidden, "Forbidden", "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.", "PurgeProtectionEnabled"})
			return
		}
		if err := o.h.cfg.Store.PurgeSecret(o.v.Name, name, now); err != nil {
			o.storeFail(err, errDeletedNotFound(name), "purge secret")
			return
		}
		o.h.cfg.Log.Info("secret purged", "vault", o.v.Name, "secret", name, "oid", o.c.objectID)
		o.w.WriteHeader(http.StatusNoContent)
	case len(rest) == 1 && rest[0] == "recover" && m == http.MethodPost:
		named(o.w, "recover")
		if !o.allowed(name, ActionRecover) {
			return
		}
		if _, sv, err := o.h.cfg.Store.DeletedSecret(o.v.Name, name, now); err == nil && sv.Managed {
			o.fail(errManaged(name))
			return
		}
		h, sv, err := o.h.cfg.Store.RecoverSecret(o.v.Name, name, now)
		if err != nil {
			o.storeFail(err, errDeletedNotFound(name), "recover secret")
			return
		}
		o.h.cfg.Log.Info("secret recovered", "vault", o.v.Name, "secret", name, "oid", o.c.objectID)
		writeJSON(o.w, http.StatusOK, o.bundle(h, sv, false))
	case len(rest) <= 1:
		o.methodNotAllowed()
	default:
		o.fail(&kvError{http.StatusNotFound, "NotFound", "The requested path was not found.", ""})
	}
}

func (o *operation) storeFail(err error, notFound *kvError, what string) {
	if errors.Is(err, store.ErrNotFound) {
		o.fail(notFound)
		return
	}
	o.internal(what, err)
}

// page reads maxresults (1..25, default 25) and $skiptoken (an offset).
func (o *operation) page() (size, off int, e *kvError) {
	size = MaxPageSize
	if s := o.q.Get("maxresults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return 0, 0, errBadParameter("maxresults must be an integer between 1 and %d.", MaxPageSize)
		}
		size = n
	}
	if s := o.q.Get("$skiptoken"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > SecretsPerVault+VersionsPerSecret {
			return 0, 0, errBadParameter("The $skiptoken is invalid.")
		}
		off = n
	}
	return size, off, nil
}

// writePage answers a list with one page and a nextLink on the vault's
// own URL when more remain, as Key Vault does.
func (o *operation) writePage(items []map[string]any, size, off int) {
	off = min(off, len(items))
	end := min(off+size, len(items))
	out := map[string]any{"value": items[off:end], "nextLink": nil}
	if end < len(items) {
		nq := url.Values{}
		nq.Set("api-version", o.q.Get("api-version"))
		nq.Set("$skiptoken", strconv.Itoa(end))
		nq.Set("maxresults", strconv.Itoa(size))
		out["nextLink"] = strings.TrimSuffix(o.h.VaultURI(o.v.Name), "/") + o.r.URL.Path + "?" + nq.Encode()
	}
	writeJSON(o.w, http.StatusOK, out)
}

func (o *operation) list(deleted bool) {
	named(o.w, map[bool]string{false: "list", true: "list-deleted"}[deleted])
	if !o.allowed("", ActionReadMetadata) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	entries, err := o.h.cfg.Store.Secrets(o.v.Name, deleted, o.now())
	if err != nil {
		o.internal("list secrets", err)
		return
	}
	items := make([]map[string]any, 0, len(entries))
	for i := range entries {
		it := o.item(&entries[i].Head, &entries[i].Latest, "")
		if deleted {
			d := entries[i].Head.Deleted
			it["recoveryId"] = o.recoveryID(entries[i].Head.Name)
			it["deletedDate"] = d.DeletedDate.Unix()
			it["scheduledPurgeDate"] = d.ScheduledPurgeDate.Unix()
		}
		items = append(items, it)
	}
	o.writePage(items, size, off)
}

func (o *operation) versions(name string) {
	named(o.w, "versions")
	if !o.allowed(name, ActionReadMetadata) {
		return
	}
	size, off, e := o.page()
	if e != nil {
		o.fail(e)
		return
	}
	vs, err := o.h.cfg.Store.SecretVersions(o.v.Name, name, o.now())
	if err != nil {
		o.storeFail(err, errSecretNotFound(name, ""), "list versions")
		return
	}
	h := &store.VaultSecret{Name: name}
	items := make([]map[string]any, 0, len(vs))
	for i := range vs {
		items = append(items, o.item(h, &vs[i], vs[i].Version))
	}
	o.writePage(items, size, off)
}

func (o *operation) secretID(name, version string) string {
	id := o.h.VaultURI(o.v.Name) + "secrets/" + name
	if version != "" {
		id += "/" + version
	}
	return id
}

func (o *operation) recoveryID(name string) string {
	return o.h.VaultURI(o.v.Name) + "deletedsecrets/" + name
}

func (o *operation) attributes(sv *store.SecretVersion) map[string]any {
	level := "Recoverable+Purgeable"
	if o.v.PurgeProtection {
		level = "Recoverable"
	}
	if o.v.SoftDeleteRetentionDays < DefaultRetentionDay {
		level = "Customized" + level
	}
	a := map[string]any{
		"enabled": sv.Enabled, "created": sv.Created.Unix(), "updated": sv.Updated.Unix(),
		"recoveryLevel": level, "recoverableDays": o.v.SoftDeleteRetentionDays,
	}
	if sv.NotBefore != nil {
		a["nbf"] = sv.NotBefore.Unix()
	}
	if sv.Expires != nil {
		a["exp"] = sv.Expires.Unix()
	}
	return a
}

// item is a SecretItem: metadata, never the value. id names the version
// only in version lists.
func (o *operation) item(h *store.VaultSecret, sv *store.SecretVersion, version string) map[string]any {
	it := map[string]any{"id": o.secretID(h.Name, version), "attributes": o.attributes(sv)}
	if len(sv.Tags) > 0 {
		it["tags"] = sv.Tags
	}
	if sv.ContentType != "" {
		it["contentType"] = sv.ContentType
	}
	if sv.Managed {
		it["managed"] = true
	}
	return it
}

// errManaged refuses changing a certificate's secret as a secret.
func errManaged(name string) *kvError {
	return &kvError{http.StatusForbidden, "Forbidden", "Secret " + name + " is the secret of certificate " + name + ": import, delete or recover the certificate instead.", ""}
}

// bundle is a SecretBundle; the value only for set and get.
func (o *operation) bundle(h *store.VaultSecret, sv *store.SecretVersion, withValue bool) map[string]any {
	b := o.item(h, sv, sv.Version)
	if sv.Managed {
		b["kid"] = o.h.VaultURI(o.v.Name) + "keys/" + h.Name + "/" + sv.Version
	}
	if withValue {
		b["value"] = sv.Value
	}
	return b
}

func (o *operation) deletedBundle(h *store.VaultSecret, sv *store.SecretVersion) map[string]any {
	b := o.bundle(h, sv, false)
	b["recoveryId"] = o.recoveryID(h.Name)
	if h.Deleted != nil {
		b["deletedDate"] = h.Deleted.DeletedDate.Unix()
		b["scheduledPurgeDate"] = h.Deleted.ScheduledPurgeDate.Unix()
	}
	return b
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
