package sts

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strconv"
)

// Bounds on the token request body.
const (
	MaxFormBytes  = 1 << 20
	maxFormFields = 64
)

var errFormTooLarge = errors.New("request body too large")

// duplicateFieldError names a form field sent more than once.
type duplicateFieldError struct{ name string }

func (e *duplicateFieldError) Error() string { return "duplicate form field " + strconv.Quote(e.name) }

// parseForm parses an application/x-www-form-urlencoded body strictly: valid
// encoding, no field repeated (a repeated client_id or scope is ambiguous,
// and servers disagree on which copy wins), a bounded number of fields.
func parseForm(contentType string, body []byte) (map[string]string, error) {
	if len(body) > MaxFormBytes {
		return nil, errFormTooLarge
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("content type %q is not application/x-www-form-urlencoded", contentType)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("malformed form body: %w", err)
	}
	if len(vals) > maxFormFields {
		return nil, fmt.Errorf("more than %d form fields", maxFormFields)
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		if len(v) != 1 {
			return nil, &duplicateFieldError{name: k}
		}
		out[k] = v[0]
	}
	return out, nil
}
