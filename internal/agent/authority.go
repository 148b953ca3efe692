package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// authorityProbe tells readiness whether the identity provider is reachable
// and trusted: an HTTPS answer (any status) from the authority through the
// client the token provider uses, so the CA it verifies with is the one the
// agent's token requests will meet. An agent that reports Ready while every
// token request would fail with "identity provider unreachable" hides the
// fault from the rollout that caused it.
type authorityProbe struct {
	url    string
	client *http.Client
	// every is the interval while the last probe succeeded, retry while it failed.
	every, retry time.Duration

	mu   sync.Mutex
	last error // nil once a probe succeeded; errNotProbed before the first
}

var errNotProbed = errors.New("not probed yet")

func newAuthorityProbe(authority string, client *http.Client) *authorityProbe {
	if client == nil {
		client = http.DefaultClient
	}
	return &authorityProbe{url: authority, client: client, every: 30 * time.Second, retry: 2 * time.Second, last: errNotProbed}
}

// Run probes until ctx ends.
func (p *authorityProbe) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		next := p.every
		if err := p.check(ctx); err != nil {
			next = p.retry
		}
		t.Reset(next)
	}
}

// check probes once and records the outcome.
func (p *authorityProbe) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := p.probe(ctx)
	p.mu.Lock()
	p.last = err
	p.mu.Unlock()
	return err
}

func (p *authorityProbe) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.Body.Close()
}

// Ready is nil once the last probe got an answer.
func (p *authorityProbe) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil {
		return fmt.Errorf("identity provider %s not reachable or not trusted: %w", p.url, p.last)
	}
	return nil
}
