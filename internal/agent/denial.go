package agent

import (
	"errors"
	"fmt"
	"net/http"
)

// DenialReason says why the decision layer (Resolver, Decider, choose)
// refuses a caller. It is the domain's vocabulary; the HTTP status, error
// code and metrics outcome are chosen from it only at the edge (Handler).
type DenialReason int

// Denial reasons.
const (
	// DenyHostCaller: a process on the node or a hostNetwork pod.
	DenyHostCaller DenialReason = iota + 1
	// DenyCallerAddress: the caller's source address cannot be read.
	DenyCallerAddress
	// DenyUnknownCaller: no running pod of this node owns the address (yet).
	DenyUnknownCaller
	// DenyAmbiguousCaller: more than one pod claims the address.
	DenyAmbiguousCaller
	// DenyStaleCaller: the pod that owned the address is gone or changed.
	DenyStaleCaller
	// DenyUnguardedCaller: the node cannot vouch that the address is the
	// pod's (no CNI record, or its anti-spoofing rules are not in place).
	DenyUnguardedCaller
	// DenyNoIdentity: the pod may use no identity.
	DenyNoIdentity
	// DenyNotAllowed: the identity the caller named is not the pod's.
	DenyNotAllowed
	// DenyChooseIdentity: several identities, and the caller named none.
	DenyChooseIdentity
	// DenyExcepted: an AzurePodIdentityException covers the pod.
	DenyExcepted
	// DenyKubernetes: a read the decision needs failed (not a decision).
	DenyKubernetes
)

// Denial is a refusal by the decision layer with a message the caller can act on.
type Denial struct {
	Reason DenialReason
	Msg    string
}

func (d *Denial) Error() string { return d.Msg }

// Temporary reports whether the denial is a failed read rather than a
// decision: such a denial must not be remembered.
func (d *Denial) Temporary() bool { return d.Reason == DenyKubernetes }

func denied(reason DenialReason, format string, args ...any) *Denial {
	return &Denial{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// denialHTTP maps each reason to its IMDS status and metrics outcome.
var denialHTTP = map[DenialReason]struct {
	status  int
	outcome string
}{
	DenyHostCaller:      {http.StatusForbidden, outcomeHostCaller},
	DenyCallerAddress:   {http.StatusForbidden, outcomeUnknownCaller},
	DenyUnknownCaller:   {http.StatusNotFound, outcomeUnknownCaller},
	DenyAmbiguousCaller: {http.StatusNotFound, outcomeAmbiguousCaller},
	DenyStaleCaller:     {http.StatusNotFound, outcomeStaleCaller},
	DenyUnguardedCaller: {http.StatusNotFound, outcomeUnguardedCaller},
	DenyNoIdentity:      {http.StatusNotFound, outcomeNoIdentity},
	DenyNotAllowed:      {http.StatusNotFound, outcomeNotAllowed},
	DenyChooseIdentity:  {http.StatusBadRequest, outcomeBadRequest},
	DenyExcepted:        {http.StatusForbidden, outcomeExcepted},
	DenyKubernetes:      {http.StatusServiceUnavailable, outcomeKubernetesError},
}

// asHTTP maps an error of the decision layer to the IMDS error the caller
// gets. Anything that is not a Denial is an internal error: its text is not
// shown to the caller.
func asHTTP(err error) *httpError {
	var d *Denial
	if !errors.As(err, &d) {
		return &httpError{status: http.StatusInternalServerError, code: "internal_error", description: "internal error", outcome: outcomeInternal}
	}
	m, ok := denialHTTP[d.Reason]
	if !ok {
		return &httpError{status: http.StatusInternalServerError, code: "internal_error", description: d.Msg, outcome: outcomeInternal}
	}
	code := "invalid_request"
	if m.status == http.StatusForbidden {
		code = "access_denied"
	}
	return &httpError{status: m.status, code: code, description: d.Msg, outcome: m.outcome}
}
