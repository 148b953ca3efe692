package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/token"
)

// Config configures the broker.
type Config struct {
	// RESTConfig reaches the API server as the broker's service account. Required.
	RESTConfig *rest.Config
	// ListenAddr is the HTTPS listener for agents. Required.
	ListenAddr string
	// TLSCertFile and TLSKeyFile hold the serving certificate (re-read
	// when they change). Required.
	TLSCertFile, TLSKeyFile string
	// TokenFile is the broker's own projected service-account token for
	// the exchange audience. Required.
	TokenFile string
	// AgentServiceAccount is the agents' service account, namespace/name
	// (default: podid-agent in the broker's own namespace): only its pod
	// tokens (AgentHeader) are accepted as the presenting agent.
	AgentServiceAccount string

	HealthAddr, MetricsAddr, DebugAddr string

	// As the agent's: identity provider, further adEndpoint hosts, its
	// HTTP client (with its CA), default tenant, legacy cluster-wide bindings.
	Authority          string
	AllowedAuthorities []string
	ProviderHTTPClient *http.Client
	DefaultTenantID    string
	ClusterWide        bool

	// ServeSecretIdentities: serve types 1/2, reading their Secrets (the
	// broker then needs get on Secrets: chart broker.secretIdentities).
	ServeSecretIdentities bool

	// MaxCachedTokens bounds the token cache (default 10000).
	MaxCachedTokens int
	// ReviewTTL caps how long a pod token's validation is remembered
	// (default 5m); AccessTTL how long an access decision is (default 30s).
	ReviewTTL, AccessTTL time.Duration

	Logger *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.RESTConfig == nil {
		errs = append(errs, errors.New("API server config is required"))
	}
	if c.ListenAddr == "" {
		errs = append(errs, errors.New("listen address is required"))
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		errs = append(errs, errors.New("TLS certificate and key files are required"))
	}
	if c.TokenFile == "" {
		errs = append(errs, errors.New("the broker's own token file is required"))
	}
	return errors.Join(errs...)
}

// Run runs the broker until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("broker config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, self, err := readOwnToken(cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("broker's own token: %w", err)
	}
	agentUser := "system:serviceaccount:" + self.Namespace + ":podid-agent"
	if cfg.AgentServiceAccount != "" {
		ns, name, ok := strings.Cut(cfg.AgentServiceAccount, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("broker config: agent service account %q is not namespace/name", cfg.AgentServiceAccount)
		}
		agentUser = "system:serviceaccount:" + ns + ":" + name
	}
	certs := &certFiles{cert: cfg.TLSCertFile, key: cfg.TLSKeyFile}
	if _, err := certs.get(nil); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg.RESTConfig)
	if err != nil {
		return fmt.Errorf("build Kubernetes client: %w", err)
	}
	informers, err := agent.NewDecisionCache(ctx, cfg.RESTConfig)
	if err != nil {
		return err
	}
	reg := daemon.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	pcfg := token.ProviderConfig{
		Authority: cfg.Authority, HTTPClient: cfg.ProviderHTTPClient, TokenRequester: ownToken{cfg.TokenFile}, Logger: log,
	}
	if cfg.ServeSecretIdentities {
		pcfg.Secrets = token.KubeSecretReader{Client: cs}
	}
	provider := token.NewProvider(pcfg)
	tokens := token.NewCache(token.CacheConfig{
		Source: provider, MaxEntries: cfg.MaxCachedTokens, Logger: log,
		OnLookup: func(r string) { metrics.lookups.WithLabelValues(r).Inc() },
		OnUpstream: func(_ token.Kind, _ time.Duration, err error) {
			r := "ok"
			if err != nil {
				r = token.ReasonOf(err)
				if r == "" {
					r = "error"
				}
			}
			metrics.upstream.WithLabelValues(r).Inc()
		},
	})
	handler := NewHandler(HandlerConfig{
		Reviewer:  &Reviewer{Client: cs, TTL: cfg.ReviewTTL, OnReview: func(r string) { metrics.reviews.WithLabelValues(r).Inc() }},
		Agents:    &Reviewer{Client: cs, Audience: AgentAudience, TTL: cfg.ReviewTTL, OnReview: func(r string) { metrics.reviews.WithLabelValues("agent_" + r).Inc() }},
		AgentUser: agentUser,
		Decider: &agent.BindingDecider{Reader: informers, Rules: binding.Rules{ClusterWide: cfg.ClusterWide},
			DefaultTenantID: cfg.DefaultTenantID, Authority: cfg.Authority, AllowedAuthorities: cfg.AllowedAuthorities},
		Access: &Access{Client: cs, TTL: cfg.AccessTTL},
		Tokens: tokens, Self: self, SecretIdentities: cfg.ServeSecretIdentities, Metrics: metrics, Logger: log,
	})
	log.Info("broker exchanges as", "subject", self.Subject(), "pod", self.Namespace+"/"+self.Name, "agents", agentUser)

	var ready atomic.Bool
	synced := func(ctx context.Context) error {
		if informers.WaitForCacheSync(ctx) {
			ready.Store(true)
			log.Info("broker caches synced")
		}
		return nil
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 16 << 10,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get},
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return daemon.Run(ctx, daemon.Config{
		HealthAddr: cfg.HealthAddr, MetricsAddr: cfg.MetricsAddr, DebugAddr: cfg.DebugAddr, Registry: reg, Logger: log,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("caches not synced")
			}
			return nil
		},
	},
		informers.Start,
		synced,
		tokens.Run,
		func(ctx context.Context) error { return daemon.Serve(ctx, log, "broker", cfg.ListenAddr, srv) },
	)
}
