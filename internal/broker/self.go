package broker

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// maxTokenFile bounds the projected token file read.
const maxTokenFile = 16 << 10

// ownToken is the broker's own projected service-account token (audience
// api://AzureADTokenExchange, rotated by the kubelet), read afresh for every
// exchange. It is the assertion package token's Provider sends: the
// broker's service account is the subject of every identity's credential.
type ownToken struct{ path string }

// RequestToken implements token.TokenRequester: whatever pod the request
// names, the assertion is the broker's own.
func (o ownToken) RequestToken(_ context.Context, _ token.Pod, audience string, _ int64) (string, error) {
	if audience != workloadidentity.TokenAudience {
		return "", fmt.Errorf("broker token file holds audience %s only, not %s", workloadidentity.TokenAudience, audience)
	}
	tok, _, err := readOwnToken(o.path)
	if err != nil {
		return "", &token.Error{Reason: token.ReasonKubernetes, Msg: "the broker cannot read its own service-account token", Err: err}
	}
	return tok, nil
}

// k8sClaims are the claims the API server puts in a pod-bound token.
type k8sClaims struct {
	jwt.Claims
	Kubernetes struct {
		Namespace string `json:"namespace"`
		Pod       struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// readOwnToken reads the token file and the broker's own pod from its
// claims (the file is the kubelet's, not an input from the network).
func readOwnToken(path string) (string, token.Pod, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", token.Pod{}, fmt.Errorf("open token file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxTokenFile+1)
	n, _ := f.Read(buf)
	if n > maxTokenFile {
		return "", token.Pod{}, fmt.Errorf("token file %s larger than %d bytes", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(buf[:n]))
	t, err := jwt.ParseSigned(tok, podTokenAlgs)
	if err != nil {
		return "", token.Pod{}, fmt.Errorf("token file %s: %w", path, err)
	}
	var c k8sClaims
	if err := t.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "", token.Pod{}, fmt.Errorf("token file %s: %w", path, err)
	}
	if !slices.Contains([]string(c.Audience), workloadidentity.TokenAudience) {
		return "", token.Pod{}, fmt.Errorf("token file %s is for audience %v; project it with audience %s", path, []string(c.Audience), workloadidentity.TokenAudience)
	}
	k := c.Kubernetes
	if k.Namespace == "" || k.ServiceAccount.Name == "" || k.Pod.Name == "" || k.Pod.UID == "" {
		return "", token.Pod{}, fmt.Errorf("token file %s is not a pod-bound service-account token", path)
	}
	return tok, token.Pod{Namespace: k.Namespace, Name: k.Pod.Name, UID: types.UID(k.Pod.UID), ServiceAccount: k.ServiceAccount.Name}, nil
}
