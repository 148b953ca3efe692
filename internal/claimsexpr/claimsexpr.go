// Package claimsexpr parses and evaluates the claims matching expressions of
// Entra's flexible federated identity credentials (languageVersion 1), so
// that one federated credential can trust a pattern of subjects, such as
// every ServiceAccount of a namespace:
//
//	claims['sub'] matches 'system:serviceaccount:shop:*'
//
// The language is Entra's, strictly: a term is a claim lookup
// claims['<name>'], one space, an operator, one space and a comparand in
// single quotes; terms are joined by " and ". Operators: eq (exact,
// case-sensitive) and matches (the comparand is a pattern: '*' matches any
// run of characters, '?' exactly one; everything else matches itself).
// Entra defines no escapes, no "or", no parentheses and no other operators;
// anything else is refused with an error naming the position. podid
// evaluates the sub claim only.
package claimsexpr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// LanguageVersion is the only version of the language.
const LanguageVersion = 1

// MaxLen bounds an expression (Entra's limit on federated credential fields).
const MaxLen = 600

// Claims evaluates only these claims.
var Claims = []string{"sub"}

// Op is a comparison operator.
type Op string

// The operators of language version 1.
const (
	OpEq      Op = "eq"
	OpMatches Op = "matches"
)

// Term is one comparison.
type Term struct {
	Claim     string
	Op        Op
	Comparand string
}

// Expr is a parsed expression: all its terms must hold.
type Expr struct {
	Terms []Term
}

// Error is a parse error at a byte offset of the expression.
type Error struct {
	Pos int
	Msg string
}

func (e *Error) Error() string {
	return fmt.Sprintf("claims matching expression: at %d: %s", e.Pos, e.Msg)
}

// Parse parses an expression of languageVersion version.
func Parse(s string, version int) (*Expr, error) {
	if version != LanguageVersion {
		return nil, fmt.Errorf("claims matching expression: languageVersion %d is not supported: use %d", version, LanguageVersion)
	}
	switch {
	case s == "":
		return nil, errors.New("claims matching expression: empty")
	case len(s) > MaxLen:
		return nil, fmt.Errorf("claims matching expression: longer than %d characters", MaxLen)
	case !utf8.ValidString(s):
		return nil, errors.New("claims matching expression: not valid UTF-8")
	}
	p := &parser{s: s}
	e := &Expr{}
	for {
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		e.Terms = append(e.Terms, t)
		if p.pos == len(s) {
			return e, nil
		}
		if !p.lit(" and ") {
			return nil, &Error{p.pos, `want " and " and another term, or the end`}
		}
	}
}

type parser struct {
	s   string
	pos int
}

func (p *parser) lit(l string) bool {
	if strings.HasPrefix(p.s[p.pos:], l) {
		p.pos += len(l)
		return true
	}
	return false
}

// quoted reads a single-quoted string without quotes or control
// characters inside.
func (p *parser) quoted() (string, error) {
	start := p.pos
	if !p.lit("'") {
		return "", &Error{p.pos, "want a single-quoted string"}
	}
	end := strings.IndexByte(p.s[p.pos:], '\'')
	if end < 0 {
		return "", &Error{start, "unterminated string"}
	}
	v := p.s[p.pos : p.pos+end]
	if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", &Error{p.pos, "control character in a string"}
	}
	p.pos += end + 1
	return v, nil
}

func (p *parser) term() (Term, error) {
	var t Term
	if !p.lit("claims[") {
		return t, &Error{p.pos, "want a claim lookup claims['<name>']"}
	}
	at := p.pos
	name, err := p.quoted()
	if err != nil {
		return t, err
	}
	if !p.lit("]") {
		return t, &Error{p.pos, "want ] after the claim name"}
	}
	known := false
	for _, c := range Claims {
		known = known || c == name
	}
	if !known {
		return t, &Error{at, fmt.Sprintf("claim %q is not supported: podid's federated credentials match %s", name, strings.Join(Claims, ", "))}
	}
	t.Claim = name
	if !p.lit(" ") {
		return t, &Error{p.pos, "want one space and an operator"}
	}
	switch {
	case p.lit(string(OpMatches)):
		t.Op = OpMatches
	case p.lit(string(OpEq)):
		t.Op = OpEq
	default:
		return t, &Error{p.pos, "want an operator: matches or eq"}
	}
	if !p.lit(" ") {
		return t, &Error{p.pos, "want one space and a single-quoted comparand"}
	}
	if t.Comparand, err = p.quoted(); err != nil {
		return t, err
	}
	if t.Comparand == "" {
		return t, &Error{p.pos - 2, "empty comparand"}
	}
	return t, nil
}

// Match reports whether claims satisfy every term. A claim that is absent
// (or not a string) satisfies nothing.
func (e *Expr) Match(claims map[string]string) bool {
	for _, t := range e.Terms {
		v, ok := claims[t.Claim]
		if !ok {
			return false
		}
		switch t.Op {
		case OpEq:
			if v != t.Comparand {
				return false
			}
		case OpMatches:
			if !wildcard(t.Comparand, v) {
				return false
			}
		default:
			return false
		}
	}
	return len(e.Terms) > 0
}

// String is the expression in its canonical form.
func (e *Expr) String() string {
	parts := make([]string, len(e.Terms))
	for i, t := range e.Terms {
		parts[i] = "claims['" + t.Claim + "'] " + string(t.Op) + " '" + t.Comparand + "'"
	}
	return strings.Join(parts, " and ")
}

// wildcard matches s against pattern ('*' any run, '?' one rune), in
// linear time (greedy with one backtrack point, no recursion).
func wildcard(pattern, s string) bool {
	p, r := []rune(pattern), []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(r) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == r[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
