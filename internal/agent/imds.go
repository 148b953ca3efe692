package agent

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Limits on request input.
const (
	maxQueryLen    = 4096
	maxQueryParams = 16
	maxResourceLen = 1024
	maxIDLen       = 1024
)

// httpError is an IMDS JSON error: {"error":…,"error_description":…}.
type httpError struct {
	status      int
	code        string // OAuth-style error code
	description string
	retryAfter  int // seconds, for 429
	outcome     string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.description) }

func badRequest(format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, code: "invalid_request", description: fmt.Sprintf(format, args...), outcome: outcomeBadRequest}
}

// selector says which identity the caller asked for; at most one field is set.
type selector struct {
	clientID   string
	objectID   string
	resourceID string // msi_res_id or mi_res_id
}

func (s selector) String() string {
	switch {
	case s.clientID != "":
		return "client_id " + s.clientID
	case s.objectID != "":
		return "object_id " + s.objectID
	case s.resourceID != "":
		return "msi_res_id " + s.resourceID
	}
	return "no identity selector"
}

// tokenQuery is a parsed, validated token request.
type tokenQuery struct {
	apiVersion string
	// resource has any trailing /.default removed.
	resource string
	sel      selector
}

// route classifies a request path. It looks at the raw request target so that
// encoded separators, backslashes and dot segments are seen, not cleaned away.
type route int

const (
	routeOther route = iota
	routeToken
	routeInstance
	routeBadPath
)

// classifyPath decides which endpoint a raw request target names.
func classifyPath(requestURI string) (route, string) {
	if !strings.HasPrefix(requestURI, "/") {
		// absolute-form ("http://host/…") or "*": this is not a proxy.
		return routeBadPath, ""
	}
	path, query, _ := strings.Cut(requestURI, "?")
	if strings.ContainsAny(path, `\%;`) || strings.Contains(path, "//") || strings.Contains(path, "/.") {
		return routeBadPath, query
	}
	if !strings.HasPrefix(strings.ToLower(path), "/metadata") {
		return routeOther, query
	}
	// Only the first segment is case-insensitive.
	rest := path[len("/metadata"):]
	if rest == "/identity/oauth2/token" || rest == "/identity/oauth2/token/" {
		return routeToken, query
	}
	if rest == "/instance" || strings.HasPrefix(rest, "/instance/") {
		return routeInstance, query
	}
	if strings.HasPrefix(strings.ToLower(rest), "/identity") || rest == "" || rest == "/" {
		return routeBadPath, query
	}
	return routeOther, query
}

// checkHeaders applies the header rules of the token endpoint.
func checkHeaders(h http.Header) *httpError {
	if _, ok := h["X-Forwarded-For"]; ok {
		return badRequest("Request contains X-Forwarded-For header: the metadata service does not accept proxied requests")
	}
	if _, ok := h["Forwarded"]; ok {
		return badRequest("Request contains Forwarded header: the metadata service does not accept proxied requests")
	}
	if v := h.Values("Metadata"); len(v) != 1 || v[0] != "true" {
		return badRequest("Required metadata header not specified")
	}
	return nil
}

var apiVersionRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$`)

// parseQuery parses the raw query of a token request strictly: no duplicate
// parameters, valid percent-encoding, bounded sizes, exactly one resource,
// at most one identity selector.
func parseQuery(raw string) (tokenQuery, *httpError) {
	var q tokenQuery
	if len(raw) > maxQueryLen {
		return q, badRequest("Query string is longer than %d bytes", maxQueryLen)
	}
	seen := map[string]string{}
	n := 0
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		if n++; n > maxQueryParams {
			return q, badRequest("Too many query parameters (at most %d)", maxQueryParams)
		}
		if strings.Contains(part, ";") {
			return q, badRequest("Query parameters must be separated by '&', not ';'")
		}
		rk, rv, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return q, badRequest("Query parameter name is not valid percent-encoding")
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return q, badRequest("Query parameter %s is not valid percent-encoding", safeName(k))
		}
		if _, dup := seen[k]; dup {
			return q, badRequest("Query parameter %s is given more than once", safeName(k))
		}
		seen[k] = v
	}
	q.apiVersion = seen["api-version"]
	if q.apiVersion == "" {
		return q, badRequest("Required query variable 'api-version' is missing")
	}
	if !apiVersionRE.MatchString(q.apiVersion) {
		return q, badRequest("Query parameter api-version is not a valid API version")
	}
	res, ok := seen["resource"]
	if !ok || strings.TrimSpace(res) == "" {
		return q, badRequest("Required query variable 'resource' is missing")
	}
	if len(res) > maxResourceLen {
		return q, badRequest("Query parameter resource is longer than %d bytes", maxResourceLen)
	}
	if strings.IndexFunc(res, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return q, badRequest("Query parameter resource contains whitespace or control characters")
	}
	res = strings.TrimSuffix(res, "/.default")
	if res == "" {
		return q, badRequest("Required query variable 'resource' is missing")
	}
	q.resource = res
	count := 0
	for _, k := range []string{"client_id", "object_id", "msi_res_id", "mi_res_id"} {
		v, ok := seen[k]
		if !ok {
			continue
		}
		count++
		if v == "" || len(v) > maxIDLen || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return q, badRequest("Query parameter %s is empty or malformed", k)
		}
		switch k {
		case "client_id":
			q.sel.clientID = v
		case "object_id":
			q.sel.objectID = v
		default:
			q.sel.resourceID = v
		}
	}
	if count > 1 {
		return q, badRequest("Only one of client_id, object_id, msi_res_id may be given")
	}
	return q, nil
}

// safeName bounds a parameter name quoted back in an error.
func safeName(k string) string {
	if len(k) > 40 {
		k = k[:40]
	}
	return fmt.Sprintf("%q", k)
}
