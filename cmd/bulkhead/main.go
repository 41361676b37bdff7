// Command bulkhead runs a split LAMP stack in which every tier is its own
// isolated node. See internal/cli for its verbs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead/bulkhead/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
