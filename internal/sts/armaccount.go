package sts

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/podid/podid/internal/sts/store"
)

// What `az login` reads from ARM once it has a token: the subscriptions the
// signed-in principal may use (GET /subscriptions) and, for some flows, its
// tenants (GET /tenants). Both answer any valid ARM token of ours — as in
// Azure, no role is needed to ask; what is listed depends on the caller.
//
// Visibility, by Azure RBAC as in Azure: a subscription of the caller's
// tenant is listed when the caller holds a role assignment (any role) at
// the subscription's scope or below it (a resource group or resource in
// it), or at the tenant root "/", which is above every subscription. A
// caller with no such assignment sees none (az then says "No subscriptions
// found", as on Azure). Another tenant's subscriptions are never listed.
// See Directory.VisibleSubscriptions.

// accountAPIVersions are the api-versions of Microsoft.Resources'
// subscriptions and tenants lists that the Azure CLI and SDKs send.
var accountAPIVersions = []string{"2016-06-01", "2018-06-01", "2019-06-01", "2019-11-01", "2020-01-01", "2021-01-01", "2022-01-01", "2022-09-01", "2022-12-01"}

// accountList names one of the two lists.
type accountList int

const (
	listSubscriptions accountList = iota
	listTenants
)

// LocalSubscriptionName is the display name of every local subscription: the
// sts records subscriptions by id only.
const LocalSubscriptionName = "podid local cloud"

func (s *mgmt) serveAccountList(w http.ResponseWriter, r *http.Request, which accountList) {
	c, ae := s.authenticate(r)
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	if r.Method != http.MethodGet {
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeARMError(w, armError{400, "InvalidQueryParameter", "malformed query string"})
		return
	}
	for k, v := range q {
		if len(v) != 1 {
			writeARMError(w, armError{400, "InvalidQueryParameter", "query parameter '" + k + "' is repeated"})
			return
		}
	}
	switch v := q.Get("api-version"); {
	case v == "":
		writeARMError(w, armError{400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."})
		return
	case !slices.Contains(accountAPIVersions, v):
		writeARMError(w, armError{400, "InvalidApiVersionParameter", "The api-version '" + v + "' is invalid. The supported versions are '" + strings.Join(accountAPIVersions, ",") + "'."})
		return
	}
	t, ok := s.Tenant(c.tenantID)
	if !ok {
		// A valid token of a tenant since removed.
		writeARMError(w, armError{401, "InvalidAuthenticationTokenTenant", "The access token is from a tenant that does not exist."})
		return
	}
	var items []map[string]any
	switch which {
	case listTenants:
		items = append(items, tenantJSON(t))
	case listSubscriptions:
		subs, err := s.VisibleSubscriptions(c.tenantID, c.objectID)
		if err != nil {
			writeARMError(w, armErrorFor(err))
			return
		}
		for _, sub := range subs {
			items = append(items, subscriptionJSON(sub, c.tenantID))
		}
	}
	s.writePage(w, r, items, q)
}

func subscriptionJSON(sub, tenantID string) map[string]any {
	return map[string]any{
		"id":                  "/subscriptions/" + sub,
		"authorizationSource": "RoleBased",
		"managedByTenants":    []any{},
		"subscriptionId":      sub,
		"tenantId":            tenantID,
		"displayName":         LocalSubscriptionName,
		"state":               "Enabled",
		"subscriptionPolicies": map[string]any{
			"locationPlacementId": "Public_2014-09-01",
			"quotaId":             "PayAsYouGo_2014-09-01",
			"spendingLimit":       "Off",
		},
	}
}

func tenantJSON(t store.Tenant) map[string]any {
	def := ""
	if len(t.Domains) > 0 {
		def = t.Domains[0]
	}
	return map[string]any{
		"id":             "/tenants/" + t.ID,
		"tenantId":       t.ID,
		"tenantCategory": "Home",
		"countryCode":    "US",
		"displayName":    def,
		"domains":        orEmpty(t.Domains),
		"defaultDomain":  def,
		"tenantType":     "AAD",
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
