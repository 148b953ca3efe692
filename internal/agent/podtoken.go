package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/token"
)

// PodTokenPath is the path of the pod-token endpoint on the node-local socket.
const PodTokenPath = "/pod-token"

// PodTokenResponse is the pod-token endpoint's answer.
type PodTokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresOn   int64  `json:"expires_on"`
	ClientID    string `json:"client_id"`
}

// PodTokens answers podid csi-provider for usePodIdentity mounts, on a unix
// socket that only the provider's DaemonSet mounts: GET
// /pod-token?namespace=N&name=P&uid=U&resource=R gives the token of the
// identity the pod's v1 binding (or its ServiceAccount) gives that pod, by
// the same rules and from the same cache as its IMDS requests. The pod must
// run on this node with exactly that UID; the caller is trusted to name the
// mounting pod (the provider has it from the driver, which has it from the
// kubelet).
type PodTokens struct {
	// Pod returns this node's pod with the UID (nil: none).
	Pod     func(types.UID) *corev1.Pod
	Decider Decider
	Tokens  Tokens
	Logger  *slog.Logger
}

// ServeHTTP implements http.Handler.
func (p *PodTokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fail := func(e *httpError) {
		log.Info("pod-token request denied", "status", e.status, "reason", e.description)
		writeError(w, e)
	}
	if r.Method != http.MethodGet || r.URL.Path != PodTokenPath {
		fail(&httpError{status: http.StatusNotFound, code: "not_found", description: "only GET " + PodTokenPath})
		return
	}
	q := r.URL.Query()
	for _, k := range []string{"namespace", "name", "uid", "resource"} {
		if len(q[k]) != 1 || q.Get(k) == "" || len(q.Get(k)) > 512 {
			fail(badRequest("query parameter %s must be given once", k))
			return
		}
	}
	ns, name, uid, resource := q.Get("namespace"), q.Get("name"), types.UID(q.Get("uid")), strings.TrimSuffix(q.Get("resource"), "/.default")
	pod := p.Pod(uid)
	if pod == nil || pod.Namespace != ns || pod.Name != name {
		fail(&httpError{status: http.StatusNotFound, code: "pod_not_found", description: fmt.Sprintf("no pod %s/%s with UID %s on this node", ns, name, uid)})
		return
	}
	ctx := r.Context()
	ids, err := p.Decider.Identities(ctx, pod)
	if err != nil {
		fail(asHTTP(err))
		return
	}
	id, err := choose(pod, ids, selector{})
	if err != nil {
		fail(asHTTP(err))
		return
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tok, _, err := p.Tokens.Get(ctx, token.Request{Identity: id, Resource: resource,
		Pod: token.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ServiceAccount: sa}})
	if err != nil {
		fail(tokenError(err))
		return
	}
	body, _ := json.Marshal(PodTokenResponse{AccessToken: tok.AccessToken, ExpiresOn: tok.ExpiresOn.Unix(), ClientID: id.ClientID})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
	log.Debug("pod token served", "pod", ns+"/"+name, "identity", id.ClientID, "resource", resource)
}

// ServePodTokens serves h on a 0600 unix socket at path until ctx ends.
func ServePodTokens(ctx context.Context, log *slog.Logger, path string, h http.Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("pod-token socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket", path)
		}
		_ = os.Remove(path)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("pod-token socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return daemon.ServeListener(ctx, log, "pod-token", ln, srv)
}
