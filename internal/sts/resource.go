package sts

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// CodeResourceNotFound is Entra's answer to a resource it does not know.
const CodeResourceNotFound = 500011

// wellKnownResources are Microsoft's first-party resources as clients name
// them: the identifier URIs of their service principals (the spelling the
// Azure SDKs and docs use) and their application ids, which Entra accepts
// too. Matching ignores case and a trailing "/" (normResource), so
// "https://storage.azure.com" and "https://storage.azure.com/" both match.
var wellKnownResources = []string{
	// Azure Resource Manager (and its classic name, what `az` asks for).
	"https://management.azure.com/", "https://management.core.windows.net/", "797f4846-ba00-4fd7-ba43-dac1f8f63013",
	// Storage.
	"https://storage.azure.com/", "e406a681-f3d4-42a8-90b6-c2b029497af1",
	// Key Vault, Managed HSM.
	"https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093", "https://managedhsm.azure.net",
	// Azure SQL; PostgreSQL and MySQL flexible servers.
	"https://database.windows.net/", "022907d3-0f1b-48f7-badc-1ba6abab6d66", "https://ossrdbms-aad.database.windows.net",
	// Service Bus and Event Hubs (one service principal, two names).
	"https://servicebus.azure.net", "https://eventhubs.azure.net", "80369ed6-5f11-4dd9-bef3-692475845e77",
	// Microsoft Graph; the retired Azure AD Graph.
	"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000", "https://graph.windows.net/", "00000002-0000-0000-c000-000000000000",
	// Cosmos DB data plane.
	"https://cosmos.azure.com",
	// Event Grid, App Configuration, Container Registry, Cache for Redis.
	"https://eventgrid.azure.net", "https://azconfig.io", "https://containerregistry.azure.net", "https://redis.azure.com",
	// Azure AI services / Azure OpenAI.
	"https://cognitiveservices.azure.com",
	// Azure Monitor ingestion, Log Analytics, Data Explorer.
	"https://monitor.azure.com", "https://api.loganalytics.io", "https://kusto.kusto.windows.net",
	// Data Lake, Batch, Synapse, Digital Twins.
	"https://datalake.azure.net/", "https://batch.core.windows.net/", "https://dev.azuresynapse.net", "https://digitaltwins.azure.net",
	// Azure DevOps; the AKS Entra server application.
	"499b84ac-1321-427f-aa17-267ca6975798", "6dae42f8-4368-4678-94ff-3960e28e3630",
}

// accountSuffixes are first-party services whose per-account URLs Entra
// accepts as resources (https://{account}.{suffix}), as older SDKs ask for
// them: Storage services, Cosmos DB accounts, Service Bus / Event Hubs
// namespaces.
var accountSuffixes = []string{
	"blob.core.windows.net", "queue.core.windows.net", "table.core.windows.net", "file.core.windows.net", "dfs.core.windows.net",
	"documents.azure.com", "servicebus.windows.net",
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// accountResource reports whether r is https://{account}.{suffix} with an
// optional :443 and "/", nothing else.
func accountResource(r string) bool {
	u, err := url.Parse(r)
	if err != nil || u.Scheme != "https" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || (u.Port() != "" && u.Port() != "443") {
		return false
	}
	account, suffix, ok := strings.Cut(strings.ToLower(u.Hostname()), ".")
	if !ok || !dnsLabel.MatchString(account) {
		return false
	}
	for _, s := range accountSuffixes {
		if suffix == s {
			return true
		}
	}
	return false
}

var wellKnown = func() map[string]bool {
	m := make(map[string]bool, len(wellKnownResources))
	for _, r := range wellKnownResources {
		m[normResource(r)] = true
	}
	return m
}()

// firstParty reports whether r names a Microsoft first-party resource: a
// well-known identifier URI or application id, or a per-account URL. Entra
// issues v1 tokens for these (iss https://sts.windows.net/{tid}/, aud as
// requested) whatever the tenant holds, and resource servers such as Azure
// Storage (and Azurite) accept only that shape; no tenant application can
// claim these names (Entra: identifier URIs must be on a verified domain of
// the tenant, application ids are Microsoft's).
func firstParty(r string) bool { return wellKnown[normResource(r)] || accountResource(r) }

// knownResource reports whether tokens may be issued for resource in the
// tenant: a Microsoft well-known resource, or a name (identifier URI,
// client id) of an application registered in that
// tenant — never another tenant's.
func (s *Server) knownResource(tenantID, resource string) bool {
	norm := normResource(resource)
	return wellKnown[norm] || norm == "https://"+s.cfg.VaultDNSSuffix || accountResource(resource) || s.dir.p.Load().resources[tenantID+"|"+norm] != nil
}

func errResourceNotFound(resource, tenant string) *OAuthError {
	return newErr(http.StatusBadRequest, "invalid_resource", CodeResourceNotFound,
		"The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
		truncate(strings.ToValidUTF8(resource, "?"), 600), tenant)
}
