package token

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// CacheConfig configures a Cache. Zero values get the documented defaults.
type CacheConfig struct {
	// Source obtains tokens on a miss or refresh. Required.
	Source Source
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxEntries bounds the number of cached tokens; default 10000. When full,
	// expired entries go first, then the least recently used.
	MaxEntries int
	// MinValidity: a token expiring within this is not handed out (clients
	// would have to come back at once); default 2m, at most a quarter of the
	// token's lifetime.
	MinValidity time.Duration
	// FetchTimeout bounds one upstream fetch; default 30s.
	FetchTimeout time.Duration
	// SweepInterval is how often Run drops expired entries and refreshes
	// tokens due for refresh; default 30s.
	SweepInterval time.Duration
	// RetryBackoff is how long a failed background refresh waits before the
	// next attempt; default 10s, doubling up to 2m.
	RetryBackoff time.Duration
	// OnLookup is told "hit" or "miss" for each Get. Optional.
	OnLookup func(result string)
	// OnUpstream is told the duration and outcome of each upstream fetch. Optional.
	OnUpstream func(kind Kind, d time.Duration, err error)
	Logger     *slog.Logger
}

// Cache is a token cache in front of a Source. A Cache is assembled by
// NewCache (no I/O); Run drives its sweeps and owns its background fetches.
// Get works without Run; fetches then stop when their callers leave or time
// out.
type Cache struct {
	cfg  CacheConfig
	life context.Context // parent of every fetch; cancelled when Run returns
	stop context.CancelFunc
	wg   sync.WaitGroup // counts fetch goroutines

	mu      sync.RWMutex // protects entries, byPod, calls and each entry's pods, req, retryAt, backoff
	entries map[Key]*entry
	byPod   map[types.UID]map[Key]struct{}
	calls   map[Key]*call
}

type entry struct {
	tok       Token
	refreshAt time.Time
	lastUsed  atomic.Int64 // unix nanoseconds, updated without the write lock
	pods      map[types.UID]Pod
	// req is the latest request; background refreshes reuse it.
	req     Request
	retryAt time.Time
	backoff time.Duration
}

// call is one upstream fetch that any number of waiters share. Its context
// ends when it completes, when the cache stops, or when every waiter has left.
type call struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // guarded by Cache.mu
	tok     Token
	err     error
}

// NewCache assembles a cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.MinValidity <= 0 {
		cfg.MinValidity = 2 * time.Minute
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 30 * time.Second
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 10 * time.Second
	}
	if cfg.OnLookup == nil {
		cfg.OnLookup = func(string) {}
	}
	if cfg.OnUpstream == nil {
		cfg.OnUpstream = func(Kind, time.Duration, error) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	life, stop := context.WithCancel(context.Background())
	return &Cache{cfg: cfg, life: life, stop: stop,
		entries: map[Key]*entry{}, byPod: map[types.UID]map[Key]struct{}{}, calls: map[Key]*call{}}
}

// Run sweeps the cache until ctx ends, then cancels in-flight fetches and
// waits for them.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.SweepInterval)
	defer func() {
		t.Stop()
		c.stop()
		c.wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Sweep()
		}
	}
}

// minValidity is how much lifetime a token must have left to be handed out.
func (c *Cache) minValidity(t Token) time.Duration {
	mv := c.cfg.MinValidity
	if life := t.ExpiresOn.Sub(t.IssuedAt); life > 0 && life/4 < mv {
		mv = life / 4
	}
	return mv
}

func (c *Cache) usable(t Token, now time.Time) bool {
	return t.ExpiresOn.Sub(now) > c.minValidity(t)
}

// Get returns a token for r: from the cache when one is usable (refreshing it
// in the background when due), otherwise from the source, with concurrent
// misses for one key sharing a single upstream call. cached reports a hit.
func (c *Cache) Get(ctx context.Context, r Request) (tok Token, cached bool, err error) {
	key := KeyOf(r)
	now := c.cfg.Now()
	c.mu.RLock()
	e := c.entries[key]
	var (
		have, tracked, due bool
	)
	if e != nil {
		tok = e.tok
		_, tracked = e.pods[r.Pod.UID]
		due = !now.Before(e.refreshAt) && !now.Before(e.retryAt)
		have = c.usable(tok, now)
	}
	c.mu.RUnlock()
	if have {
		c.cfg.OnLookup("hit")
		e.lastUsed.Store(now.UnixNano())
		if !tracked {
			c.track(key, r)
		}
		if due {
			c.refreshAsync(key, r)
		}
		return tok, true, nil
	}
	c.cfg.OnLookup("miss")
	tok, err = c.fetch(ctx, key, r)
	return tok, false, err
}

// track records that r's pod uses key, so the entry lives while the pod does.
func (c *Cache) track(key Key, r Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		c.addPodLocked(key, e, r)
	}
}

func (c *Cache) addPodLocked(key Key, e *entry, r Request) {
	if r.Pod.UID == "" {
		return
	}
	e.pods[r.Pod.UID] = r.Pod
	e.req = r
	m := c.byPod[r.Pod.UID]
	if m == nil {
		m = map[Key]struct{}{}
		c.byPod[r.Pod.UID] = m
	}
	m[key] = struct{}{}
}

// fetch joins or starts the upstream call for key and waits for it or ctx.
func (c *Cache) fetch(ctx context.Context, key Key, r Request) (Token, error) {
	cl := c.join(key, r)
	select {
	case <-cl.done:
		if cl.err == nil {
			c.track(key, r)
		}
		return cl.tok, cl.err
	case <-ctx.Done():
		c.leave(key, cl)
		return Token{}, ctx.Err()
	}
}

// join returns the in-flight call for key, starting one if there is none,
// with the caller counted as a waiter.
func (c *Cache) join(key Key, r Request) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[key]
	if cl == nil {
		fctx, cancel := context.WithTimeout(c.life, c.cfg.FetchTimeout)
		cl = &call{done: make(chan struct{}), cancel: cancel}
		c.calls[key] = cl
		c.wg.Add(1)
		go c.run(fctx, key, r, cl)
	}
	cl.waiters++
	return cl
}

// leave drops a waiter; the last one to go cancels the fetch, and the call
// is forgotten so that a later request starts afresh.
func (c *Cache) leave(key Key, cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl.waiters--
	if cl.waiters == 0 {
		cl.cancel()
		if c.calls[key] == cl {
			delete(c.calls, key)
		}
	}
}

func (c *Cache) run(ctx context.Context, key Key, r Request, cl *call) {
	defer c.wg.Done()
	defer cl.cancel()
	start := time.Now()
	tok, err := c.cfg.Source.Token(ctx, r)
	c.cfg.OnUpstream(r.Identity.Kind, time.Since(start), err)
	now := c.cfg.Now()
	if err == nil && tok.IssuedAt.IsZero() {
		tok.IssuedAt = now
	}
	if err == nil && !c.usable(tok, now) {
		err = &Error{Reason: ReasonProviderRejected, Msg: "identity provider returned a token that is already expired or about to expire (check the clocks of the node and the provider)"}
	}
	c.mu.Lock()
	if c.calls[key] == cl {
		delete(c.calls, key)
	}
	if err == nil {
		c.storeLocked(key, r, tok, now)
	} else if e := c.entries[key]; e != nil {
		// Keep serving the old token while it is usable; retry later.
		if e.backoff == 0 {
			e.backoff = c.cfg.RetryBackoff
		} else if e.backoff < 2*time.Minute {
			e.backoff *= 2
		}
		e.retryAt = now.Add(e.backoff)
	}
	cl.tok, cl.err = tok, err
	c.mu.Unlock()
	close(cl.done)
	if err != nil {
		c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "token fetch failed",
			slog.String("identity", r.Identity.ClientID), slog.String("kind", r.Identity.Kind.String()),
			slog.String("resource", r.Resource), slog.String("pod", r.Pod.Namespace+"/"+r.Pod.Name),
			slog.String("reason", ReasonOf(err)), slog.String("error", err.Error()))
	} else {
		// Audit trail: which pod's assertion (or which secret) obtained the token.
		c.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "token fetched",
			slog.String("identity", r.Identity.ClientID), slog.String("kind", r.Identity.Kind.String()),
			slog.String("resource", r.Resource), slog.String("pod", r.Pod.Namespace+"/"+r.Pod.Name),
			slog.String("pod_uid", string(r.Pod.UID)), slog.Time("expires_on", tok.ExpiresOn))
	}
}

func (c *Cache) storeLocked(key Key, r Request, tok Token, now time.Time) {
	e := c.entries[key]
	if e == nil {
		if len(c.entries) >= c.cfg.MaxEntries {
			c.evictLocked(now)
		}
		e = &entry{pods: map[types.UID]Pod{}}
		c.entries[key] = e
	}
	e.tok = tok
	e.refreshAt = tok.IssuedAt.Add(tok.ExpiresOn.Sub(tok.IssuedAt) * 2 / 3)
	e.retryAt, e.backoff = time.Time{}, 0
	e.lastUsed.Store(now.UnixNano())
	c.addPodLocked(key, e, r)
}

// evictLocked makes room for one entry: expired entries first, else the
// least recently used one.
func (c *Cache) evictLocked(now time.Time) {
	var (
		lru     Key
		lruSeen = int64(1<<63 - 1)
		freed   bool
	)
	for k, e := range c.entries {
		if !c.usable(e.tok, now) {
			c.deleteLocked(k, e)
			freed = true
			continue
		}
		if u := e.lastUsed.Load(); u < lruSeen {
			lru, lruSeen = k, u
		}
	}
	if !freed {
		if e := c.entries[lru]; e != nil {
			c.deleteLocked(lru, e)
		}
	}
}

func (c *Cache) deleteLocked(k Key, e *entry) {
	for uid := range e.pods {
		if m := c.byPod[uid]; m != nil {
			delete(m, k)
			if len(m) == 0 {
				delete(c.byPod, uid)
			}
		}
	}
	delete(c.entries, k)
}

// refreshAsync starts a background refresh of key unless one is running.
func (c *Cache) refreshAsync(key Key, r Request) {
	c.mu.RLock()
	_, running := c.calls[key]
	c.mu.RUnlock()
	if running || c.life.Err() != nil {
		return
	}
	cl := c.join(key, r)
	// The refresher is a waiter: it leaves when the call completes or the
	// cache stops, so the fetch is never cancelled by the request that
	// triggered it going away.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case <-cl.done:
		case <-c.life.Done():
			c.leave(key, cl)
		}
	}()
}

// ForgetPod drops the pod from every entry it used; entries no remaining pod
// uses are evicted. Call it when a pod is deleted or leaves the node.
func (c *Cache) ForgetPod(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.byPod[uid] {
		e := c.entries[k]
		if e == nil {
			continue
		}
		delete(e.pods, uid)
		if len(e.pods) == 0 {
			delete(c.entries, k)
			continue
		}
		if e.req.Pod.UID == uid {
			for _, p := range e.pods {
				e.req.Pod = p
				break
			}
		}
	}
	delete(c.byPod, uid)
}

// Sweep drops unusable entries and starts refreshes of entries that are due.
func (c *Cache) Sweep() {
	now := c.cfg.Now()
	type due struct {
		k Key
		r Request
	}
	var refresh []due
	c.mu.Lock()
	for k, e := range c.entries {
		if !c.usable(e.tok, now) {
			c.deleteLocked(k, e)
			continue
		}
		if !now.Before(e.refreshAt) && !now.Before(e.retryAt) {
			refresh = append(refresh, due{k, e.req})
		}
	}
	c.mu.Unlock()
	for _, d := range refresh {
		c.refreshAsync(d.k, d.r)
	}
}

// Len returns the number of cached tokens.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
