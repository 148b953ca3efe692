package sts_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

const formType = "application/x-www-form-urlencoded"

func assertionForm(clientID, assertion string) string {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {storage + "/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}.Encode()
}

// An issuer whose JWKS cannot be fetched gets AADSTS50166 with the reason,
// on the first request and on the next ones (the failure is cached as a
// failure, not as an empty key set that would answer "key not found").
func TestExternalJWKSFailureIsReported(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:ns:outage"
	clientID := srv.AddIdentity(t, "outage", is.URL, subject)
	is.FailJWKS(true)
	tok := is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)
	v2 := "/" + srv.TenantID + "/oauth2/v2.0/token"
	for i := range 3 {
		r := postForm(t, srv, v2, formType, assertionForm(clientID, tok))
		assertAADSTS(t, r, 400, sts.CodeExternalOIDC, "invalid_request")
		if d, _ := r.body["error_description"].(string); !strings.Contains(d, "503") {
			t.Errorf("request %d: description %q does not carry the fetch error", i, d)
		}
	}
}
