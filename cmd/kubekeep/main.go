// Command kubekeep keeps a single-master kubeadm control plane recoverable:
// versioned, deduplicated backups on a second disk, etcd snapshots and
// deltas, ECS disk snapshots, and restores through kubeadm.
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
	defer stop()
	root := newRootCommand()
	err := handOff(root, os.Args[1:])
	if err == nil {
		err = root.ExecuteContext(ctx)
	}
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "kubekeep:", ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "kubekeep:", err)
	os.Exit(1)
}

// exitError carries a specific exit status (verify: 1 = damage found) out of
// a command without cobra printing usage for it.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
