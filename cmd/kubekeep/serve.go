//go:build !kubekeep_front

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/objects"
	"github.com/kubekeep/kubekeep/serve"
)

type serveOptions struct {
	version       string
	at            string
	encConfig     string
	listen        string
	kubeconfigOut string
}

func newServeCommand(g *globalOptions) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve a version read-only as a Kubernetes API, for kubectl",
		Long: `Serve the objects of a version's etcd snapshot (plus the recorded etcd
changes for --at) as a read-only Kubernetes API over TLS, so kubectl works
on a backup: get and list of every built-in resource and of the custom
resources of the CRDs in the snapshot, label and field selectors, -o
yaml|json, kubectl's tables (with the CRDs' printer columns), describe,
and get -w (which shows the one state a backup has and then waits). No
etcd and no kube-apiserver run: objects are read straight from the store
as 'kubekeep get' reads them, Secrets decrypted with the version's
EncryptionConfiguration.

Every write (create, apply, edit, delete, patch) is refused with 405 and
a message that this is a backup. A throwaway CA is made for the session;
the kubeconfig written (0600; by default in a fresh 0700 temp dir removed
on exit) trusts it and carries the only client certificate the server
accepts: requests without it get 401, since the API shows decrypted
Secrets. Stops on SIGINT or SIGTERM.`,
		Example: `  kubekeep serve --version latest
  kubekeep serve --at 2026-11-23T10:17:30Z --kubeconfig-out /root/backup.conf
  kubectl --kubeconfig /root/backup.conf get cm -n shop
  kubectl --kubeconfig /root/backup.conf get cm shop-settings -n shop -o yaml | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd.Context(), g, o, args)
		},
	}
	versionFlags(cmd, &o.version, &o.at, &o.encConfig)
	cmd.Flags().StringVar(&o.listen, "listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
	cmd.Flags().StringVar(&o.kubeconfigOut, "kubeconfig-out", "", "write the kubeconfig here, 0600 (default: a file in a fresh temp dir, removed on exit)")
	return cmd
}

func runServe(ctx context.Context, g *globalOptions, o *serveOptions, _ []string) error {
	start := time.Now()
	host, _, err := net.SplitHostPort(o.listen)
	if err != nil {
		return &exitError{code: 2, msg: fmt.Sprintf("--listen %q: want HOST:PORT, like 127.0.0.1:8443: %v", o.listen, err)}
	}
	// From the start, so that an interrupt at any point still runs the
	// deferred clean-up (the kubeconfig's temp dir holds the client key).
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	vs, err := openVersionState(ctx, g, o.version, o.at, o.encConfig, false, nil)
	if err != nil {
		return err
	}
	defer vs.Close()
	label, hint := vs.id, "kubekeep get RESOURCE/NAMESPACE/NAME --version "+vs.id
	if o.at != "" {
		label, hint = fmt.Sprintf("%s at %s", vs.id, o.at), "kubekeep get RESOURCE/NAMESPACE/NAME --at "+o.at
	}
	// A key index found damaged while serving: the whole snapshot, as
	// withIndexFallback does for get (opened once, closed at exit).
	var whole *versionSnapshot
	defer func() {
		if whole != nil {
			whole.Close()
		}
	}()
	fallback := func() (objects.Reader, error) {
		w, err := openVersionState(ctx, g, o.version, o.at, o.encConfig, true, nil)
		if err != nil {
			return nil, err
		}
		whole = w
		return w.snap, nil
	}
	srv, err := serve.New(serve.Config{Reader: vs.snap, Version: label, GetHint: hint, Logger: g.logger, Fallback: fallback})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	// The kubeconfig names the address it can reach: loopback for a
	// wildcard listen.
	urlHost := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		urlHost = "127.0.0.1"
	}
	creds, err := serve.NewCredentials([]string{host})
	if err != nil {
		return err
	}
	url := "https://" + net.JoinHostPort(urlHost, fmt.Sprint(port))

	path := o.kubeconfigOut
	if path == "" {
		removeDeadServeDirs(os.TempDir(), g.logger)
		dir, err := os.MkdirTemp("", serveDirPrefix)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		// Whose dir this is: a later serve removes it once this process
		// is gone (killed, so the deferred removal never ran).
		if err := os.WriteFile(filepath.Join(dir, servePIDFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return err
		}
		path = filepath.Join(dir, "kubeconfig")
	}
	name := "kubekeep-" + vs.id
	data, err := creds.Kubeconfig(url, name)
	if err != nil {
		return err
	}
	if err := serve.WriteKubeconfig(path, data); err != nil {
		return fmt.Errorf("--kubeconfig-out: %w", err)
	}
	// What the listen address lets in, not what the kubeconfig names: ""
	// and 0.0.0.0 are every interface.
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		g.logger.Warn("serving beyond loopback: whoever holds the kubeconfig reads every object of the backup, Secrets decrypted", "listen", o.listen)
	}
	g.logger.Info("serving", "version", vs.id, "at", o.at, "revision", srv.Revision(), "url", url, "kubeconfig", path,
		"indexed", vs.indexed, "deltaEvents", vs.deltas, "encryptionFrom", vs.encryptionFrom(), "notServed", len(srv.Problems()),
		"startup", time.Since(start).Round(time.Millisecond).String())
	for _, p := range srv.Problems() {
		fmt.Fprintf(g.stderr, "warning: not served: %s\n", p)
	}
	fmt.Fprintf(g.stderr, "Serving backup %s (etcd revision %d) read-only on %s\nkubeconfig: %s\n\n  kubectl --kubeconfig %s get pods -A\n\nStop with Ctrl-C.\n",
		label, srv.Revision(), url, path, shellQuote(path))

	return serve.Run(ctx, ln, srv, creds, g.logger)
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

const (
	serveDirPrefix = "kubekeep-serve-"
	servePIDFile   = "pid"
)

// removeDeadServeDirs removes the kubeconfig dirs of serve processes that
// are gone (kill -9 skips the deferred removal; the dir holds a client
// key, useless once its server and throwaway CA are gone, but not to be
// left lying around). A dir whose process lives, or that names none, is
// left alone.
func removeDeadServeDirs(tmp string, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, serveDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, servePIDFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // alive (or another user's)
		}
		if err := os.RemoveAll(d); err == nil {
			log.Info("removed the kubeconfig dir a killed serve left", "dir", d, "pid", pid)
		}
	}
}
