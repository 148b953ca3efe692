package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/scheme"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// Interceptor keeps pod traffic to 169.254.169.254 redirected to the agent.
type Interceptor interface {
	// Run installs the rules, re-checks them until ctx ends and leaves them in place.
	Run(ctx context.Context) error
	// Installed reports whether the rules were in place at the last check.
	Installed() bool
}

// PodGuard is the Guard the agent runs (intercept.Guard).
type PodGuard interface {
	Guard
	// Run keeps the rules in line with the node's records until ctx ends.
	Run(ctx context.Context) error
	// Refresh asks for a sync soon.
	Refresh()
	// Ready reports whether the last sync applied every rule.
	Ready() bool
}

// Config configures the node agent.
type Config struct {
	// NodeName is this node; only its pods are served. Required.
	NodeName string
	// RESTConfig reaches the API server as the agent's service account. Required.
	RESTConfig *rest.Config
	// ListenAddr is the IMDS listener, the target of the interception rule
	// (e.g. 10.0.0.4:2579). Required.
	ListenAddr string
	// HealthAddr serves /healthz and /readyz; empty disables.
	HealthAddr string
	// MetricsAddr serves /metrics (the same listener when equal to
	// HealthAddr); empty disables.
	MetricsAddr string
	// DebugAddr serves net/http/pprof on its own listener; empty (default) disables.
	DebugAddr string

	// Authority is the identity provider; default token.DefaultAuthority.
	Authority string
	// AllowedAuthorities are further adEndpoint values an AzureIdentity may use.
	AllowedAuthorities []string
	// ProviderHTTPClient reaches the identity provider (with its CA).
	ProviderHTTPClient *http.Client
	// DefaultTenantID is used for identities that name no tenant.
	DefaultTenantID string
	// ClusterWide lets bindings select pods in other namespaces (legacy mode).
	ClusterWide bool
	// ServeSecretIdentities enables types 1 and 2 (the agent then needs RBAC to read Secrets).
	ServeSecretIdentities bool
	// ConfirmTTL: how long a live API-server confirmation of a caller stays valid; default 1s.
	ConfirmTTL time.Duration
	// MaxCachedTokens bounds the token cache; default 10000.
	MaxCachedTokens int
	// Broker obtains the tokens of broker identities (broker.Client); nil:
	// none is configured and such identities fail with 503.
	Broker token.Source
	// BrokerClientIDs are the identities obtained through the broker.
	BrokerClientIDs []string
	// BrokerSecretIdentities: types 1/2 are obtained through the broker.
	BrokerSecretIdentities bool

	// PodTokenSocket, if set, serves podid csi-provider's usePodIdentity
	// mounts (PodTokens) on this unix socket.
	PodTokenSocket string

	Interceptor Interceptor // nil: the agent does not manage interception
	// Guard ties pod addresses to pod interfaces on the node; with it, a
	// caller is served only once its address is guarded. nil: the source
	// address is trusted as is, which any pod with NET_RAW can forge
	// (docs/agent.md).
	Guard  PodGuard
	Logger *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if c.RESTConfig == nil {
		errs = append(errs, errors.New("API server config is required"))
	}
	if c.ListenAddr == "" {
		errs = append(errs, errors.New("listen address is required"))
	}
	if c.ConfirmTTL < 0 {
		errs = append(errs, errors.New("confirm TTL must not be negative"))
	}
	return errors.Join(errs...)
}

// Run runs the node agent until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConfirmTTL == 0 {
		cfg.ConfirmTTL = time.Second
	}
	cs, err := kubernetes.NewForConfig(cfg.RESTConfig)
	if err != nil {
		return fmt.Errorf("build Kubernetes client: %w", err)
	}
	informers, err := NewDecisionCache(ctx, cfg.RESTConfig)
	if err != nil {
		return err
	}
	index := NewPodIndex()
	reg := daemon.NewRegistry()
	metrics, err := NewMetrics(reg, func() float64 { return float64(index.Len()) })
	if err != nil {
		return err
	}
	pcfg := token.ProviderConfig{
		Authority:      cfg.Authority,
		HTTPClient:     cfg.ProviderHTTPClient,
		TokenRequester: token.KubeTokenRequester{Client: cs},
		Logger:         log,
	}
	if cfg.ServeSecretIdentities {
		pcfg.Secrets = token.KubeSecretReader{Client: cs}
	}
	provider := token.NewProvider(pcfg)
	tokens := token.NewCache(token.CacheConfig{
		Source: token.Routed{Direct: provider, Broker: cfg.Broker}, MaxEntries: cfg.MaxCachedTokens,
		OnLookup: metrics.Lookup, OnUpstream: metrics.Upstream, Logger: log,
	})
	resolver := &IndexResolver{Index: index, Pods: kubePods{cs}, NodeName: cfg.NodeName, ConfirmTTL: cfg.ConfirmTTL}
	decider := &MemoDecider{Decider: &BindingDecider{Reader: informers, Rules: binding.Rules{ClusterWide: cfg.ClusterWide},
		DefaultTenantID: cfg.DefaultTenantID, Authority: cfg.Authority, AllowedAuthorities: cfg.AllowedAuthorities,
		BrokerClientIDs: cfg.BrokerClientIDs, BrokerSecretIdentities: cfg.BrokerSecretIdentities}}
	handler := NewHandler(HandlerConfig{Resolver: resolver, Decider: decider, Tokens: tokens, Metrics: metrics, Logger: log})

	if cfg.Guard != nil {
		resolver.Guard = cfg.Guard
	}
	index.OnGone = func(uid types.UID) {
		if cfg.Guard != nil {
			cfg.Guard.Refresh() // drop its rules as soon as the CNI record is gone
		}
		resolver.Forget(uid)
		decider.Forget(uid)
		tokens.ForgetPod(uid)
		if f, ok := cfg.Broker.(interface{ ForgetPod(types.UID) }); ok {
			f.ForgetPod(uid)
		}
	}
	// Pods of this node go straight from a reflector into the index (no
	// informer cache: the index is the only copy, compact).
	pods := toolscache.NewReflectorWithOptions(
		toolscache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "pods", metav1.NamespaceAll, func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}),
		&corev1.Pod{}, index.Store(), toolscache.ReflectorOptions{Name: "podid-agent-pods"})
	// Any change to what a decision reads makes the remembered ones stale.
	invalidate := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { decider.Invalidate() },
		UpdateFunc: func(any, any) { decider.Invalidate() },
		DeleteFunc: func(any) { decider.Invalidate() },
	}
	for _, obj := range []client.Object{&corev1.ServiceAccount{}, &podidv1.AzureIdentity{}, &podidv1.AzureIdentityBinding{}, &podidv1.AzurePodIdentityException{}} {
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(invalidate); err != nil {
			return fmt.Errorf("event handler for %T: %w", obj, err)
		}
	}

	var ready atomic.Bool
	watch := &podWatch{reflector: pods, log: log}
	index.OnRelist = watch.Resumed
	synced := func(ctx context.Context) error {
		if !informers.WaitForCacheSync(ctx) {
			return nil // ctx ended
		}
		select {
		case <-index.Synced():
		case <-ctx.Done():
			return nil
		}
		ready.Store(true)
		// The initial LIST of every watched kind is a one-time peak far
		// above the steady state (trimmed pods): give it back to the OS.
		debug.FreeOSMemory()
		log.Info("agent caches synced", "node", cfg.NodeName, "pods", index.Len())
		return nil
	}
	imds := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	tasks := []daemon.Task{
		informers.Start,
		watch.Run,
		synced,
		tokens.Run,
		func(ctx context.Context) error { return refreshHostAddrs(ctx, index, 30*time.Second) },
		func(ctx context.Context) error { return daemon.Serve(ctx, log, "imds", cfg.ListenAddr, imds) },
	}
	if cfg.PodTokenSocket != "" {
		pt := &PodTokens{Pod: index.byUID, Decider: decider, Tokens: tokens, Logger: log}
		tasks = append(tasks, func(ctx context.Context) error { return ServePodTokens(ctx, log, cfg.PodTokenSocket, pt) })
	}
	if cfg.Interceptor != nil {
		tasks = append(tasks, cfg.Interceptor.Run)
	}
	if cfg.Guard != nil {
		tasks = append(tasks, cfg.Guard.Run)
	}
	authority := cfg.Authority
	if authority == "" {
		authority = token.DefaultAuthority
	}
	idp := newAuthorityProbe(authority, cfg.ProviderHTTPClient)
	tasks = append(tasks, idp.Run)
	return daemon.Run(ctx, daemon.Config{
		HealthAddr: cfg.HealthAddr, MetricsAddr: cfg.MetricsAddr, DebugAddr: cfg.DebugAddr, Registry: reg, Logger: log,
		Ready: func() error {
			switch {
			case !ready.Load():
				return errors.New("caches not synced")
			case cfg.Interceptor != nil && !cfg.Interceptor.Installed():
				return errors.New("interception rules not installed")
			case cfg.Guard != nil && !cfg.Guard.Ready():
				return errors.New("pod anti-spoofing rules not in place")
			case watch.Failing():
				return errors.New("degraded: the pod watch is failing (new pods are not seen; guarded pods keep being served)")
			}
			return idp.Ready()
		},
	}, tasks...)
}

// NewDecisionCache builds the informer cache a BindingDecider reads
// (service accounts trimmed to the annotations it uses, the v1 kinds,
// bindings indexed); the broker reads the same.
func NewDecisionCache(ctx context.Context, rc *rest.Config) (crcache.Cache, error) {
	informers, err := crcache.New(rc, crcache.Options{
		Scheme: scheme.New(),
		ByObject: map[client.Object]crcache.ByObject{
			&corev1.ServiceAccount{}: {Transform: trimServiceAccount},
		},
		DefaultTransform: crcache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, fmt.Errorf("build informers: %w", err)
	}
	if err := binding.IndexBindings(ctx, informers); err != nil {
		return nil, err
	}
	return informers, nil
}

// refreshHostAddrs keeps the index's view of the node's own addresses current.
func refreshHostAddrs(ctx context.Context, index *PodIndex, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		addrs, err := net.InterfaceAddrs()
		if err == nil {
			var out []netip.Addr
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					out = append(out, p.Addr())
				}
			}
			index.SetHostAddrs(out)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type kubePods struct{ cs kubernetes.Interface }

func (k kubePods) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	return k.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

func trimServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return obj, nil
	}
	out := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: sa.Namespace, UID: sa.UID, ResourceVersion: sa.ResourceVersion}}
	for _, k := range []string{workloadidentity.ClientIDAnnotation, workloadidentity.TenantIDAnnotation} {
		if v, ok := sa.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}
