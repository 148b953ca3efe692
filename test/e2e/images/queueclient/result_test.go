package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

func TestAccountURLFromEnv(t *testing.T) {
	for _, tt := range []struct {
		env     map[string]string
		want    string
		wantErr string
	}{
		{map[string]string{envQueueServiceURI: "https://10.96.0.110/podiddemo"}, "https://10.96.0.110/podiddemo", ""},
		{map[string]string{envAccountName: "podiddemo"}, "https://podiddemo.queue.core.windows.net", ""},
		{map[string]string{envQueueServiceURI: " https://x.queue.core.windows.net ", envAccountName: "podiddemo"}, "https://x.queue.core.windows.net", ""},
		{map[string]string{envAccountName: "Bad.Name"}, "", "not a storage account name"},
		{map[string]string{}, "", "no queue service"},
	} {
		got, err := accountURLFromEnv(func(k string) string { return tt.env[k] })
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: err = %v, want %q", tt.env, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: got %q, %v; want %q", tt.env, got, err, tt.want)
		}
	}
}

func TestQueueURLOf(t *testing.T) {
	for _, tt := range []struct {
		account, queue    string
		wantURL, wantAcct string
		wantErr           bool
	}{
		{"https://10.96.0.110/podiddemo", "myqueue-items", "https://10.96.0.110/podiddemo/myqueue-items", "podiddemo", false},
		{"https://10.96.0.110/podiddemo/", "myqueue-items", "https://10.96.0.110/podiddemo/myqueue-items", "podiddemo", false},
		{"https://podiddemo.queue.core.windows.net", "myqueue-items", "https://podiddemo.queue.core.windows.net/myqueue-items", "podiddemo", false},
		{"https://podiddemo.queue.core.windows.net/", "q12", "https://podiddemo.queue.core.windows.net/q12", "podiddemo", false},
		{"https://[fd00::1]:10001/podiddemo", "myqueue-items", "https://[fd00::1]:10001/podiddemo/myqueue-items", "podiddemo", false},
		{"http://10.96.0.110/podiddemo", "myqueue-items", "", "", true},               // never a token over HTTP
		{"https://10.96.0.110", "myqueue-items", "", "", true},                        // IP host without the account
		{"https://10.96.0.110/a/b", "myqueue-items", "", "", true},                    // two segments
		{"https://podiddemo.queue.core.windows.net/x", "myqueue-items", "", "", true}, // account twice
		{"https://u:p@podiddemo.queue.core.windows.net", "myqueue-items", "", "", true},
		{"https://podiddemo.queue.core.windows.net?sig=x", "myqueue-items", "", "", true},
		{"https://10.96.0.110/podiddemo", "My_Queue", "", "", true},
		{"https://10.96.0.110/podiddemo", "a--b", "", "", true},
		{"https://10.96.0.110/podiddemo", "ab", "", "", true},
		{"https://10.96.0.110/Devstore", "myqueue-items", "", "", true},
	} {
		u, a, err := queueURLOf(tt.account, tt.queue)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s %s: accepted as %s", tt.account, tt.queue, u)
			}
			continue
		}
		if err != nil || u != tt.wantURL || a != tt.wantAcct {
			t.Errorf("%s %s: got %q %q %v; want %q %q", tt.account, tt.queue, u, a, err, tt.wantURL, tt.wantAcct)
		}
	}
}

func TestScopeOf(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "https://storage.azure.com/.default",
		"https://vault.azure.net/":         "https://vault.azure.net/.default",
		"https://a.queue.core.windows.net": "https://a.queue.core.windows.net/.default",
	} {
		if got := scopeOf(in); got != want {
			t.Errorf("scopeOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResultLine(t *testing.T) {
	authFailed := &azcore.ResponseError{StatusCode: http.StatusForbidden, ErrorCode: "AuthenticationFailed"}
	for _, tt := range []struct {
		r    result
		want string
	}{
		{result{queue: "q1", account: "acct", sent: `hi "x"`, received: `hi "x"`},
			`queueclient: result queue=q1 account=acct sent="hi \"x\"" received="hi \"x\"" ok`},
		{result{queue: "q1", account: "acct", op: "create queue", err: fmt.Errorf("create: %w\n<Error><AuthenticationErrorDetail>Invalid token audience.</AuthenticationErrorDetail></Error>", authFailed)},
			`queueclient: result queue=q1 account=acct failed op="create queue" status=403 code=AuthenticationFailed detail="Invalid token audience."`},
		{result{queue: "q1", account: "acct", op: "dequeue", err: errors.New("the message sent did not come back")},
			`queueclient: result queue=q1 account=acct failed op="dequeue" status=0 code=- detail="the message sent did not come back"`},
		{result{queue: "q1", account: "acct", op: "enqueue", err: errors.New("dial tcp 10.96.0.110:443: connection refused\nmore")},
			`queueclient: result queue=q1 account=acct failed op="enqueue" status=0 code=- detail="dial tcp 10.96.0.110:443: connection refused"`},
	} {
		if got := tt.r.line(); got != tt.want {
			t.Errorf("line:\n got  %s\n want %s", got, tt.want)
		}
	}
}
