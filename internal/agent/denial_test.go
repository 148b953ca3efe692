package agent

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// Each reason maps to the status the IMDS contract gives it; the text of
// an error that is not a Denial never reaches the caller.
func TestDenialToHTTP(t *testing.T) {
	for _, tt := range []struct {
		err     error
		status  int
		code    string
		outcome string
		desc    string
	}{
		{denied(DenyHostCaller, "host"), http.StatusForbidden, "access_denied", outcomeHostCaller, "host"},
		{denied(DenyCallerAddress, "addr"), http.StatusForbidden, "access_denied", outcomeUnknownCaller, "addr"},
		{denied(DenyUnknownCaller, "unknown"), http.StatusNotFound, "invalid_request", outcomeUnknownCaller, "unknown"},
		{denied(DenyAmbiguousCaller, "two"), http.StatusNotFound, "invalid_request", outcomeAmbiguousCaller, "two"},
		{denied(DenyStaleCaller, "stale"), http.StatusNotFound, "invalid_request", outcomeStaleCaller, "stale"},
		{denied(DenyUnguardedCaller, "unguarded"), http.StatusNotFound, "invalid_request", outcomeUnguardedCaller, "unguarded"},
		{denied(DenyNoIdentity, "none"), http.StatusNotFound, "invalid_request", outcomeNoIdentity, "none"},
		{denied(DenyNotAllowed, "not yours"), http.StatusNotFound, "invalid_request", outcomeNotAllowed, "not yours"},
		{denied(DenyChooseIdentity, "Multiple"), http.StatusBadRequest, "invalid_request", outcomeBadRequest, "Multiple"},
		{denied(DenyExcepted, "excepted"), http.StatusForbidden, "access_denied", outcomeExcepted, "excepted"},
		{denied(DenyKubernetes, "api down"), http.StatusServiceUnavailable, "invalid_request", outcomeKubernetesError, "api down"},
		{fmt.Errorf("wrapped: %w", denied(DenyExcepted, "excepted")), http.StatusForbidden, "access_denied", outcomeExcepted, "excepted"},
		{errors.New("secret detail"), http.StatusInternalServerError, "internal_error", outcomeInternal, "internal error"},
	} {
		e := asHTTP(tt.err)
		if e.status != tt.status || e.code != tt.code || e.outcome != tt.outcome || e.description != tt.desc {
			t.Errorf("%v: got %d %s %s %q", tt.err, e.status, e.code, e.outcome, e.description)
		}
	}
	for r := DenyHostCaller; r <= DenyKubernetes; r++ {
		if _, ok := denialHTTP[r]; !ok {
			t.Errorf("reason %d has no HTTP mapping", r)
		}
	}
}
