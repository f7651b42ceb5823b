// Command kubekeep-sandbox builds a kubeadm-like root in a directory (real
// x509 PKI, kubeconfigs, static-pod manifests, kubelet files) and serves a
// real embedded etcd on it with the sandbox's TLS material, so kubekeep can
// be tried, demonstrated and tested without a cluster. It is not part of
// the product on a master.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// stateFile remembers the sandbox's options (ports, paths) so later
// invocations reach the same etcd. It lives at the top of the sandbox root,
// outside every path kubekeep backs up.
const stateFile = ".kubekeep-sandbox.json"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kubekeep-sandbox:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "kubekeep-sandbox",
		Short:         "A kubeadm-like root with a real embedded TLS etcd, for trying kubekeep",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var k8sVersion string
	var serveFor time.Duration
	up := &cobra.Command{
		Use:   "up DIR",
		Short: "Build the sandbox root in DIR (once) and serve its etcd until stopped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUp(cmd.Context(), args[0], k8sVersion, serveFor)
		},
	}
	up.Flags().StringVar(&k8sVersion, "kubernetes-version", "v1.31.1", "kubeadm version whose layout the root mimics")
	up.Flags().DurationVar(&serveFor, "for", 0, "stop after this long (0: until SIGTERM/SIGINT)")

	renew := &cobra.Command{
		Use:   "renew-cert DIR HOST-PATH",
		Short: "Re-sign a leaf certificate with its CA, as `kubeadm certs renew` does",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := load(args[0])
			if err != nil {
				return err
			}
			return r.RenewCert(args[1])
		},
	}
	var count int
	put := &cobra.Command{
		Use:   "put-configmaps DIR NAMESPACE",
		Short: "Write --count ConfigMaps into NAMESPACE (cluster churn between backups)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), args[0], func(ctx context.Context, c *clientv3.Client) error {
				stamp := time.Now().UTC().Format(time.RFC3339Nano)
				for i := 0; i < count; i++ {
					cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%03d", i), Namespace: args[1]},
						Data: map[string]string{"written": stamp}}
					if _, err := testetcd.PutObject(ctx, c, "configmaps", cm); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	put.Flags().IntVar(&count, "count", 10, "how many ConfigMaps")
	del := &cobra.Command{
		Use:   "delete DIR RESOURCE/NAMESPACE/NAME",
		Short: "Delete one object's key from etcd, as `kubectl delete` ends up doing",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			parts := strings.Split(args[1], "/")
			if len(parts) != 3 {
				return fmt.Errorf("want RESOURCE/NAMESPACE/NAME, got %q", args[1])
			}
			return withClient(cmd.Context(), args[0], func(ctx context.Context, c *clientv3.Client) error {
				resp, err := c.Delete(ctx, testetcd.Key(parts[0], parts[1], parts[2]))
				if err != nil {
					return err
				}
				if resp.Deleted == 0 {
					return fmt.Errorf("%s: not found", args[1])
				}
				return nil
			})
		},
	}
	root.AddCommand(up, renew, put, del)
	return root
}

func runUp(ctx context.Context, dir, k8sVersion string, serveFor time.Duration) error {
	r, err := load(dir)
	fresh := errors.Is(err, os.ErrNotExist)
	switch {
	case fresh:
		cp, err := sandbox.FreePort()
		if err != nil {
			return err
		}
		pp, err := sandbox.FreePort()
		if err != nil {
			return err
		}
		if r, err = sandbox.Build(dir, sandbox.Options{KubernetesVersion: k8sVersion, EtcdClientPort: cp, EtcdPeerPort: pp}); err != nil {
			return err
		}
		data, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, stateFile), data, 0o600); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	srv, err := testetcd.Start(ctx, r)
	if err != nil {
		return err
	}
	defer srv.Stop()
	if fresh {
		if _, err := srv.LoadCluster(ctx); err != nil {
			return fmt.Errorf("load cluster objects: %w", err)
		}
	}
	fmt.Printf("sandbox ready: root=%s etcd=%s\n", r.Dir, srv.Endpoint())
	if serveFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, serveFor)
		defer cancel()
	}
	<-ctx.Done()
	return nil
}

func load(dir string) (*sandbox.Root, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var r sandbox.Root
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	r.Dir = abs
	return &r, nil
}

// withClient connects to the sandbox's etcd with its client certificate,
// from a process other than the one serving it.
func withClient(ctx context.Context, dir string, f func(context.Context, *clientv3.Client) error) error {
	r, err := load(dir)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w (run `kubekeep-sandbox up` first)", dir, err)
	}
	tlsInfo := transport.TLSInfo{CertFile: r.Path(r.EtcdClientCert), KeyFile: r.Path(r.EtcdClientKey), TrustedCAFile: r.Path(r.EtcdCAFile)}
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		return err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{r.EtcdClientURL()}, TLS: tc, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return f(ctx, c)
}
