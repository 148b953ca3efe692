// Command podid is the single binary of podid; each component is a subcommand.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// usageError marks errors caused by how podid was invoked.
type usageError struct{ error }

// usage joins the non-nil errs into a usageError; nil when there are none.
func usage(errs ...error) error {
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	return nil
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "podid:", err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}
