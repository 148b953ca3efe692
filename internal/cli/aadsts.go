package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// aadstsMeaning says, for the codes a token exchange commonly meets, what
// is wrong and what to change.
var aadstsMeaning = map[int]string{
	70021:   "no federated credential of the identity matches the assertion's issuer, subject and audience",
	700016:  "the client id is not an application or identity in this tenant",
	90002:   "the tenant does not exist at this authority",
	700024:  "the service-account token is expired or not yet valid (check the node's clock)",
	700027:  "the assertion's signature did not verify against the issuer's keys",
	50027:   "the assertion is not a well-formed JWT",
	50166:   "the identity provider could not fetch the issuer's discovery document or keys: is the issuer reachable from it, and anonymously readable?",
	7000215: "the client secret is wrong",
	7000222: "the client secret expired",
	700211:  "no federated credential matches the assertion's issuer (the cluster's OIDC issuer URL)",
	700212:  "no federated credential matches the assertion's audience",
	700213:  "no federated credential matches the subject",
	7002138: "a federated credential matches the subject only when case is ignored: subjects are case-sensitive",
	70011:   "the scope is invalid",
}

var aadstsRE = regexp.MustCompile(`AADSTS(\d+)`)

// AADSTSError is an identity provider's refusal.
type AADSTSError struct {
	Code        int    // 0 when the answer carried none
	OAuthCode   string // OAuth error, e.g. invalid_request
	Description string // first line of error_description
}

func (e *AADSTSError) Error() string {
	s := fmt.Sprintf("AADSTS%d", e.Code)
	if e.Code == 0 {
		s = e.OAuthCode
	}
	if m, ok := aadstsMeaning[e.Code]; ok {
		s += ": " + m
	} else if e.Description != "" {
		s += ": " + strings.TrimSpace(strings.TrimPrefix(e.Description, s+":"))
	}
	return s
}

// aadstsOf extracts the identity provider's answer from an azidentity error.
func aadstsOf(err error) *AADSTSError {
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) || af.RawResponse == nil {
		if m := aadstsRE.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return &AADSTSError{Code: n}
		}
		return nil
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Codes       []int  `json:"error_codes"`
	}
	b, perr := runtime.Payload(af.RawResponse)
	if perr != nil || json.Unmarshal(b, &body) != nil {
		return &AADSTSError{OAuthCode: fmt.Sprintf("HTTP %d", af.RawResponse.StatusCode)}
	}
	e := &AADSTSError{OAuthCode: body.Error, Description: oneLine(body.Description)}
	if len(body.Codes) > 0 {
		e.Code = body.Codes[0]
	} else if m := aadstsRE.FindStringSubmatch(body.Description); m != nil {
		e.Code, _ = strconv.Atoi(m[1])
	}
	return e
}

func aadstsSummary(af *azidentity.AuthenticationFailedError) string {
	if e := aadstsOf(af); e != nil {
		return e.Error()
	}
	return oneLine(af.Error())
}
