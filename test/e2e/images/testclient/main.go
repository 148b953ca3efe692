// Command testclient is the workload of podid's end-to-end tests
// (localhost/podid-testclient:dev, built by hack/image.sh, next to busybox).
// Tests run it as the container's command or through exec:
//
//	testclient sleep                 wait for SIGTERM (the default)
//	testclient cat FILE              print FILE (e.g. a projected token)
//	testclient claims FILE           print the JSON claims of the JWT in FILE
//	testclient get [-H 'K: V']... URL  GET URL, print "status=N" and the body;
//	                                 exit 1 on a transport error
//
// Output is meant for tests to parse; nothing here is clever on purpose.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"sleep"}
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
		parts := strings.Split(strings.TrimSpace(string(b)), ".")
		if len(parts) != 3 {
			return fmt.Errorf("%s is not a JWT (%d parts)", args[0], len(parts))
		}
		claims, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			return fmt.Errorf("decode claims: %w", err)
		}
		fmt.Println(string(claims))
		return nil
	case "get":
		return get(args)
	default:
		return fmt.Errorf("unknown command %q (sleep, cat, claims, get)", cmd)
	}
}

func get(args []string) error {
	header := http.Header{}
	for len(args) > 1 && args[0] == "-H" {
		k, v, ok := strings.Cut(args[1], ":")
		if !ok {
			return fmt.Errorf("header %q is not 'Name: value'", args[1])
		}
		header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		args = args[2:]
	}
	if len(args) != 1 {
		return errors.New("usage: get [-H 'Name: value']... URL")
	}
	req, err := http.NewRequest(http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	req.Header = header
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	fmt.Printf("status=%d\n%s", resp.StatusCode, body)
	return nil
}
