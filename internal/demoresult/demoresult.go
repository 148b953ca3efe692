// Package demoresult is the one line a demo program prints when it is done,
// and its parser: `podid up` reads it from the pod's log to fill in its
// summary and to check the demo. The line carries a token's key claims and
// what the resource call returned — never a token.
package demoresult

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Prefix starts the result line; the JSON object follows on the same line.
const Prefix = "podid-demo-result "

// maxLine bounds a result line: a pod's log is input podid up did not write.
const maxLine = 4096

// Result is what a demo program reports. Empty Error means the token (and
// the resource call, when the program makes one) succeeded.
type Result struct {
	Program string `json:"program"`
	// Key claims of the access token (unverified; the resource server, if
	// any, verified it).
	Aud   string    `json:"aud"`
	Tid   string    `json:"tid"`
	Oid   string    `json:"oid"`
	Exp   time.Time `json:"exp"`
	Roles []string  `json:"roles,omitempty"`
	// AskedAt is when the program first asked for a token, TokenAt when it
	// got one (retries in between); the figures compare them with the
	// pod's creation. Zero for a pod that gets no token itself (its secret
	// is mounted by a volume driver).
	AskedAt time.Time `json:"askedAt"`
	TokenAt time.Time `json:"tokenAt"`
	// Resource is what the resource call returned, in a few words (e.g. the
	// message read back from a queue); empty when the demo makes none.
	Resource string `json:"resource,omitempty"`
	// Error is why the resource call failed, when it did.
	Error string `json:"error,omitempty"`
}

// Line is r as the line a demo prints (without the newline).
func (r Result) Line() string {
	b, err := json.Marshal(r)
	if err != nil { // only plain fields: cannot happen
		panic(err)
	}
	return Prefix + string(b)
}

// ErrNoResult: the log has no result line (yet).
var ErrNoResult = errors.New("no result line")

// Find returns the first result line in a log. Lines longer than 4 KiB and
// unknown fields are refused: a log is untrusted input.
func Find(log []byte) (Result, error) {
	for _, l := range bytes.Split(log, []byte{'\n'}) {
		s := strings.TrimSuffix(string(l), "\r")
		if !strings.HasPrefix(s, Prefix) {
			continue
		}
		if len(s) > maxLine {
			return Result{}, fmt.Errorf("result line of %d bytes (at most %d)", len(s), maxLine)
		}
		d := json.NewDecoder(strings.NewReader(strings.TrimPrefix(s, Prefix)))
		d.DisallowUnknownFields()
		var r Result
		if err := d.Decode(&r); err != nil {
			return Result{}, fmt.Errorf("result line: %w", err)
		}
		// A pod that gets no token itself (a mounted secret) reports only
		// what it got.
		if r.Program == "" || r.TokenAt.IsZero() && r.Resource == "" && r.Error == "" {
			return Result{}, errors.New("result line without program, or without tokenAt and resource")
		}
		return r, nil
	}
	return Result{}, ErrNoResult
}
