package main

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Settings an Azure Functions app reads for an identity-based storage
// connection named AzureWebJobsStorage (seed 000's Secret).
const (
	envQueueServiceURI = "AzureWebJobsStorage__queueServiceUri"
	envAccountName     = "AzureWebJobsStorage__accountName"
)

var (
	accountName = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	queueName   = regexp.MustCompile(`^[a-z0-9](-?[a-z0-9]){2,62}$`)
	ipLiteral   = regexp.MustCompile(`^[0-9.]+$|:`)
)

// accountURLFromEnv is the queue service URL of the Functions settings: the
// explicit URI, else the public endpoint of the named account.
func accountURLFromEnv(getenv func(string) string) (string, error) {
	if u := strings.TrimSpace(getenv(envQueueServiceURI)); u != "" {
		return u, nil
	}
	if a := strings.TrimSpace(getenv(envAccountName)); a != "" {
		if !accountName.MatchString(a) {
			return "", fmt.Errorf("%s %q is not a storage account name (3-24 lowercase letters and digits)", envAccountName, a)
		}
		return "https://" + a + ".queue.core.windows.net", nil
	}
	return "", fmt.Errorf("no queue service: set -account-url, %s or %s", envQueueServiceURI, envAccountName)
}

// queueURLOf joins the account URL and the queue name and tells the account:
// the host's first label (https://ACCOUNT.queue.core.windows.net) or, for an
// IP host (Azurite's path style, https://IP/ACCOUNT), the first path segment.
// Only https is accepted: a Bearer token never goes over plain HTTP (azcore
// refuses too).
func queueURLOf(accountURL, queue string) (string, string, error) {
	u, err := url.Parse(accountURL)
	if err != nil {
		return "", "", fmt.Errorf("account URL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("account URL %q: want https://HOST[/ACCOUNT] without credentials, query or fragment", accountURL)
	}
	if !queueName.MatchString(queue) {
		return "", "", fmt.Errorf("queue name %q: 3-63 lowercase letters, digits and single hyphens", queue)
	}
	path := strings.Trim(u.Path, "/")
	var account string
	if ipHost(u.Hostname()) {
		if path == "" || strings.Contains(path, "/") {
			return "", "", fmt.Errorf("account URL %q: an IP host needs the account as the only path segment (https://IP/ACCOUNT)", accountURL)
		}
		account = path
	} else {
		if path != "" {
			return "", "", fmt.Errorf("account URL %q: a named host carries the account in its name, not the path", accountURL)
		}
		account, _, _ = strings.Cut(u.Hostname(), ".")
	}
	if !accountName.MatchString(account) {
		return "", "", fmt.Errorf("account URL %q: %q is not a storage account name", accountURL, account)
	}
	u.Path = "/" + strings.TrimPrefix(path+"/"+queue, "/")
	return u.String(), account, nil
}

func ipHost(h string) bool { return ipLiteral.MatchString(h) }

// scopeOf is the scope azqueue asks a token for, given its Audience option.
func scopeOf(audience string) string {
	if strings.TrimSpace(audience) == "" {
		return "https://storage.azure.com/.default"
	}
	return strings.TrimRight(audience, "/") + "/.default"
}

// result is one round trip's outcome.
type result struct {
	queue, account string
	sent, received string
	op             string // the step that failed
	err            error
}

var authDetail = regexp.MustCompile(`<AuthenticationErrorDetail>([^<]{0,200})</AuthenticationErrorDetail>`)

// line is the one machine-readable line per round trip:
//
//	queueclient: result queue=Q account=A sent="…" received="…" ok
//	queueclient: result queue=Q account=A failed op="enqueue" status=403 code=AuthenticationFailed detail="Invalid token audience."
//
// status and code are the service's answer (0 and "-" when there was none);
// detail is Storage's AuthenticationErrorDetail when it gave one, else the
// error's first line.
func (r result) line() string {
	head := fmt.Sprintf("%s: result queue=%s account=%s", name, r.queue, r.account)
	if r.err == nil {
		return fmt.Sprintf("%s sent=%s received=%s ok", head, strconv.Quote(r.sent), strconv.Quote(r.received))
	}
	status, code := 0, "-"
	var re *azcore.ResponseError
	if errors.As(r.err, &re) {
		status = re.StatusCode
		if re.ErrorCode != "" {
			code = re.ErrorCode
		}
	}
	msg := r.err.Error()
	detail, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	if m := authDetail.FindStringSubmatch(msg); m != nil {
		detail = m[1]
	}
	if len(detail) > 200 {
		detail = detail[:200]
	}
	return fmt.Sprintf("%s failed op=%s status=%d code=%s detail=%s", head, strconv.Quote(r.op), status, code, strconv.Quote(detail))
}
