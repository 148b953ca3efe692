package rbac

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrInvalidScope is the error of a string that is not an ARM scope.
var ErrInvalidScope = errors.New("invalid scope")

// MaxScopeLen bounds a scope (ARM ids are far shorter in practice).
const MaxScopeLen = 1024

var (
	guidRE    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	segmentRE = regexp.MustCompile(`^[A-Za-z0-9_.()~-]{1,260}$`)
)

// GUID reports whether s is a GUID in its 8-4-4-4-12 form.
func GUID(s string) bool { return guidRE.MatchString(s) }

// ScopeHelp says what an ARM scope looks like; errors about scopes end with it.
const ScopeHelp = "an ARM scope is /subscriptions/{subscription id}, …/resourceGroups/{name}, or a resource id such as …/resourceGroups/{name}/providers/Microsoft.KeyVault/vaults/{vault}"

// Scope is a parsed ARM scope: the tenant root "/", a subscription, a
// resource group, or a resource (possibly nested). Its String keeps the
// names' case and spells the literal segments as ARM does; two scopes are
// the same when their Keys are.
type Scope struct {
	canonical string
	sub, rg   string
}

func scopeErr(s, why string) error {
	return fmt.Errorf("%w %q: %s; %s", ErrInvalidScope, s, why, ScopeHelp)
}

// ParseScope parses an ARM scope. Literal segments (subscriptions,
// resourceGroups, providers) match case-insensitively; the subscription is
// a GUID; names are 1..260 letters, digits and -_.()~. Management groups
// and extension-resource scopes (a second /providers/) are refused.
func ParseScope(s string) (Scope, error) {
	if len(s) > MaxScopeLen {
		return Scope{}, scopeErr(s[:64]+"…", fmt.Sprintf("longer than %d characters", MaxScopeLen))
	}
	if s == "/" {
		return Scope{canonical: "/"}, nil
	}
	if !strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
		return Scope{}, scopeErr(s, "it must start with '/' and not end with one")
	}
	segs := strings.Split(s[1:], "/")
	for _, seg := range segs {
		if !segmentRE.MatchString(seg) {
			return Scope{}, scopeErr(s, fmt.Sprintf("segment %q is empty or has characters ARM names cannot have", seg))
		}
	}
	eq := strings.EqualFold
	if eq(segs[0], "providers") && len(segs) > 1 && eq(segs[1], "Microsoft.Management") {
		return Scope{}, scopeErr(s, "management group scopes are not supported by podid")
	}
	if !eq(segs[0], "subscriptions") || len(segs) < 2 || !GUID(segs[1]) {
		return Scope{}, scopeErr(s, "it does not start with /subscriptions/{subscription id (a GUID)}")
	}
	sc := Scope{sub: strings.ToLower(segs[1])}
	b := strings.Builder{}
	b.WriteString("/subscriptions/" + sc.sub)
	rest := segs[2:]
	if len(rest) > 0 && eq(rest[0], "resourceGroups") {
		if len(rest) < 2 || len(rest[1]) > 90 {
			return Scope{}, scopeErr(s, "resourceGroups must be followed by a name of at most 90 characters")
		}
		sc.rg = rest[1]
		b.WriteString("/resourceGroups/" + rest[1])
		rest = rest[2:]
	}
	if len(rest) > 0 {
		// providers/{namespace}/{type}/{name}[/{type}/{name}]…
		if !eq(rest[0], "providers") || len(rest) < 4 || len(rest)%2 != 0 {
			return Scope{}, scopeErr(s, "a resource scope is …/providers/{namespace}/{type}/{name}[/{type}/{name}]")
		}
		if !strings.Contains(rest[1], ".") {
			return Scope{}, scopeErr(s, fmt.Sprintf("%q is not a resource provider namespace", rest[1]))
		}
		for _, seg := range rest[2:] {
			if eq(seg, "providers") {
				return Scope{}, scopeErr(s, "extension resource scopes are not supported by podid")
			}
		}
		b.WriteString("/providers/" + strings.Join(rest[1:], "/"))
	}
	sc.canonical = b.String()
	return sc, nil
}

// MustParseScope is ParseScope for constants in tests and tables.
func MustParseScope(s string) Scope {
	sc, err := ParseScope(s)
	if err != nil {
		panic(err)
	}
	return sc
}

// String is the scope as ARM writes it.
func (s Scope) String() string { return s.canonical }

// Key is the scope's identity: ARM ids compare case-insensitively.
func (s Scope) Key() string { return strings.ToLower(s.canonical) }

// Root reports whether s is the tenant root "/".
func (s Scope) Root() bool { return s.canonical == "/" }

// Subscription is the scope's subscription id (lower case), "" at the root.
func (s Scope) Subscription() string { return s.sub }

// ResourceGroup is the scope's resource group, "" above one.
func (s Scope) ResourceGroup() string { return s.rg }

// Contains reports whether s is other or one of its ancestors, i.e. an
// assignment at s applies at other.
func (s Scope) Contains(other Scope) bool {
	if s.Root() {
		return other.canonical != ""
	}
	k, o := s.Key(), other.Key()
	return o == k || strings.HasPrefix(o, k+"/")
}
