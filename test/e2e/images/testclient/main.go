// Command testclient is the workload of podid's end-to-end tests
// (localhost/podid-testclient:dev, built by hack/image.sh, next to busybox).
// Tests run it as the container's command or through exec:
//
//	testclient sleep                 wait for SIGTERM
//	testclient cat FILE              print FILE (e.g. a projected token)
//	testclient claims FILE           print the JSON claims of the JWT in FILE
//	testclient get [-H 'K: V']... URL  GET URL, print "status=N" and the body;
//	                                 exit 1 on a transport error
//	testclient dns NAME              ask the pod's nameserver (resolv.conf) for NAME's
//	                                 A records, the name as given (no search list):
//	                                 "rcode=R aa=BOOL a=IP,IP…"
//	testclient get [-H 'K: V']... -n N -every D URL
//	                                 GET URL N times, D apart (a Go duration),
//	                                 one line each: "start=NS end=NS status=N
//	                                 body=QUOTED" or "start=NS end=NS
//	                                 error=QUOTED" (NS: Unix nanoseconds,
//	                                 QUOTED: a Go quoted string); exit 0
//
// Installed as /bin/wget it is also the image's wget (the subset below), because
// Debian's static busybox 1.35 wget crashes with SIGSEGV whenever -T is given:
//
//	wget [-q] [-S] [-T SECONDS] [-O FILE|-] [--header 'K: V']... URL
//
// Output is meant for tests to parse; nothing here is clever on purpose.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// tokenAlgs are the algorithms "claims" parses: what an API server signs
// projected service-account tokens with.
var tokenAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512}

func main() {
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "wget" {
		if err := wget(args, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "wget:", err)
			os.Exit(1)
		}
		return
	}
	if len(args) == 0 {
		// No default verb: a container started without arguments must say so, not
		// block forever looking healthy.
		fmt.Fprintln(os.Stderr, "usage: testclient sleep|cat FILE|claims FILE|dns NAME|get [-H 'K: V']... [-n N -every D] URL")
		os.Exit(2)
	}
	if err := run(args[0], args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testclient:", err)
		os.Exit(1)
	}
}

func run(cmd string, args []string) error {
	switch cmd {
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		fmt.Println("testclient: ready")
		<-ctx.Done()
		return nil
	case "cat":
		if len(args) != 1 {
			return errors.New("usage: cat FILE")
		}
		b, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	case "claims":
		if len(args) != 1 {
			return errors.New("usage: claims FILE")
		}
		b, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		tok, err := jwt.ParseSigned(strings.TrimSpace(string(b)), tokenAlgs)
		if err != nil {
			return fmt.Errorf("%s is not a signed JWT: %w", args[0], err)
		}
		var claims json.RawMessage
		if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
			return fmt.Errorf("decode claims: %w", err)
		}
		fmt.Println(string(claims))
		return nil
	case "get":
		return get(args)
	case "dns":
		if len(args) != 1 {
			return errors.New("usage: dns NAME")
		}
		return queryDNS(args[0])
	default:
		return fmt.Errorf("unknown command %q (sleep, cat, claims, get, dns)", cmd)
	}
}

func get(args []string) error {
	const usage = "usage: get [-H 'Name: value']... [-n N -every DURATION] URL"
	header := http.Header{}
	n, every := 0, time.Duration(0)
	for len(args) > 1 {
		var err error
		switch args[0] {
		case "-H":
			k, v, ok := strings.Cut(args[1], ":")
			if !ok {
				return fmt.Errorf("header %q is not 'Name: value'", args[1])
			}
			header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		case "-n":
			n, err = strconv.Atoi(args[1])
		case "-every":
			every, err = time.ParseDuration(args[1])
		default:
			return errors.New(usage)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		args = args[2:]
	}
	if len(args) != 1 {
		return errors.New(usage)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	if n == 0 {
		status, body, err := getOnce(hc, args[0], header)
		if err != nil {
			return err
		}
		fmt.Printf("status=%d\n%s", status, body)
		return nil
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			time.Sleep(every) // pacing, not synchronisation
		}
		start := time.Now()
		status, body, err := getOnce(hc, args[0], header)
		if err != nil {
			fmt.Printf("start=%d end=%d error=%q\n", start.UnixNano(), time.Now().UnixNano(), err.Error())
			continue
		}
		fmt.Printf("start=%d end=%d status=%d body=%q\n", start.UnixNano(), time.Now().UnixNano(), status, body)
	}
	return nil
}

func getOnce(hc *http.Client, url string, header http.Header) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header = header.Clone()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// wget is the busybox-compatible subset scripts use: -q (quiet), -S (print the
// response headers to stderr), -T (timeout in seconds), -O (output file, "-" for
// stdout; default the URL's last path element), --header (repeatable). Anything
// else is an error rather than being ignored. A non-2xx status is an error, as
// in busybox, after the body is discarded.
func wget(args []string, stdout, stderr io.Writer) error {
	const usage = "usage: wget [-q] [-S] [-T SECONDS] [-O FILE|-] [--header 'K: V']... URL"
	header := http.Header{}
	quiet, showHeaders, out, timeout := false, false, "", 10*time.Second
	var url string
	setHeader := func(v string) error {
		k, hv, ok := strings.Cut(v, ":")
		if !ok {
			return fmt.Errorf("header %q is not 'Name: value'", v)
		}
		header.Add(strings.TrimSpace(k), strings.TrimSpace(hv))
		return nil
	}
	setTimeout := func(v string) error {
		sec, err := strconv.Atoi(v)
		if err != nil || sec <= 0 {
			return fmt.Errorf("-T %q: want a positive number of seconds", v)
		}
		timeout = time.Duration(sec) * time.Second
		return nil
	}
	for len(args) > 0 {
		a := args[0]
		args = args[1:]
		switch {
		case a == "--header" || strings.HasPrefix(a, "--header="):
			v, inline := strings.CutPrefix(a, "--header=")
			if !inline {
				if len(args) == 0 {
					return fmt.Errorf("--header needs a value\n%s", usage)
				}
				v, args = args[0], args[1:]
			}
			if err := setHeader(v); err != nil {
				return err
			}
		case len(a) > 1 && a[0] == '-' && a[1] != '-':
			// Bundled short options as busybox takes them: -q -S, or -qO- / -O FILE / -T5.
			for i := 1; i < len(a); i++ {
				switch c := a[i]; c {
				case 'q':
					quiet = true
				case 'S':
					showHeaders = true
				case 'O', 'T':
					v := a[i+1:]
					if v == "" {
						if len(args) == 0 {
							return fmt.Errorf("-%c needs a value\n%s", c, usage)
						}
						v, args = args[0], args[1:]
					}
					if c == 'O' {
						out = v
					} else if err := setTimeout(v); err != nil {
						return err
					}
					i = len(a)
				default:
					return fmt.Errorf("unknown option -%c\n%s", c, usage)
				}
			}
		case strings.HasPrefix(a, "-") || url != "":
			return fmt.Errorf("unexpected argument %q\n%s", a, usage)
		default:
			url = a
		}
	}
	if url == "" {
		return errors.New(usage)
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header = header
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if showHeaders {
		fmt.Fprintf(stderr, "  %s %s\n", resp.Proto, resp.Status)
		for k, vs := range resp.Header {
			for _, v := range vs {
				fmt.Fprintf(stderr, "  %s: %s\n", k, v)
			}
		}
	}
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("server returned error: %s", resp.Status)
	}
	w := stdout
	if out != "-" {
		if out == "" {
			out = filepath.Base(req.URL.Path)
			if out == "/" || out == "." {
				out = "index.html"
			}
		}
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if !quiet && out != "-" {
		fmt.Fprintf(stderr, "saved '%s'\n", out)
	}
	return nil
}
