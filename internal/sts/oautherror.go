package sts

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// OAuthError is an Entra-style token endpoint error. Code is the AADSTS
// number; Description must not contain secrets or token values.
type OAuthError struct {
	Status      int
	Error       string // OAuth error: invalid_request, invalid_client, ...
	Code        int    // AADSTS code
	Description string
}

// Codes podid returns; the first five are contracted in docs/contracts.md §2.
const (
	CodeNoMatchingFIC      = 70021   // no federated identity record matches iss/sub/aud
	CodeAssertionTime      = 700024  // assertion outside its valid time range
	CodeAppNotFound        = 700016  // application not found in the tenant
	CodeInvalidSecret      = 7000215 // wrong client secret
	CodeTenantNotFound     = 90002   // tenant not found
	CodeExpiredSecret      = 7000222 // client secret expired
	CodeNoCredential       = 7000218 // neither client_secret nor client_assertion
	CodeAssertionSignature = 700027  // assertion signature / alg / key invalid
	CodeMalformedJWT       = 50027   // assertion not a well-formed JWT
	CodeExternalOIDC       = 50166   // fetching the external issuer's metadata failed
	CodeMissingParameter   = 900144  // required form field missing
	CodeMalformedRequest   = 9002313 // malformed request: body too big, duplicate fields, bad encoding
	CodeUnsupportedGrant   = 70003   // grant_type not client_credentials
	CodeInvalidScope       = 70011   // scope not "<resource>/.default"
	CodeMethodNotAllowed   = 900561  // token endpoint called with a method other than POST
)

func newErr(status int, oauth string, code int, format string, args ...any) *OAuthError {
	return &OAuthError{Status: status, Error: oauth, Code: code, Description: fmt.Sprintf(format, args...)}
}

func errTenantNotFound(t string) *OAuthError {
	return newErr(400, "invalid_request", CodeTenantNotFound, "Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", t)
}

var codeRE = regexp.MustCompile(`^AADSTS(\d+):`)

// CodeOf extracts the AADSTS number from an error_description.
func CodeOf(desc string) int {
	m := codeRE.FindStringSubmatch(desc)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func writeOAuthError(w http.ResponseWriter, r *http.Request, now time.Time, e *OAuthError) {
	trace := newGUID()
	corr := r.Header.Get("Client-Request-Id")
	if !guidRE.MatchString(corr) {
		corr = newGUID()
	}
	ts := now.UTC().Format("2006-01-02 15:04:05Z")
	desc := fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", e.Code, e.Description, trace, corr, ts)
	body := map[string]any{
		"error":             e.Error,
		"error_description": desc,
		"error_codes":       []int{e.Code},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         "https://login.microsoftonline.com/error?code=" + strconv.Itoa(e.Code),
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="`+e.Error+`"`)
	}
	writeJSON(w, e.Status, body)
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
