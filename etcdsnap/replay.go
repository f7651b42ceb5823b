package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func freeLoopbackURL(scheme string) (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	defer l.Close()
	return url.URL{Scheme: scheme, Host: "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)}, nil
}

// replay applies events with an embedded etcd on the restored dir; events
// of one original revision go in one transaction, as they were written.
// A put keeps the lease it was made under (see replayLeases): the
// snapshot's leases are in the restored db already, one granted after the
// snapshot is granted again with its ID and cfg.LeaseTTL. A lease revoked
// or expired meanwhile reached the watch as deletes of its keys, which
// replay as deletes. It returns the revisions applied and the leases
// granted.
func replay(ctx context.Context, cfg RestoreConfig, lg *zap.Logger, events []snapread.Event) (revs, granted int, err error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	cu, err := freeLoopbackURL("http")
	if err != nil {
		return 0, 0, err
	}
	pu, err := freeLoopbackURL("http")
	if err != nil {
		return 0, 0, err
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls = []url.URL{pu}
	// The member in the restored WAL advertises the manifest's peer URLs;
	// keep them so etcd sees the same member, only listen elsewhere.
	var adv []url.URL
	for _, s := range strings.Split(cfg.InitialAdvertisePeerURLs, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return 0, 0, fmt.Errorf("peer URL %q: %w", s, err)
		}
		adv = append(adv, *u)
	}
	ec.AdvertisePeerUrls = adv
	ec.InitialCluster = cfg.InitialCluster
	ec.ListenMetricsUrls = nil
	ec.LogLevel = "error"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return 0, 0, fmt.Errorf("start replay etcd: %w", err)
	}
	defer func() {
		e.Close()
		<-e.Server.StopNotify()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return 0, 0, fmt.Errorf("replay etcd failed: %w", err)
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(time.Minute):
		return 0, 0, errors.New("replay etcd not ready after a minute")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	leases, err := newReplayLeases(ctx, cli, lg, cfg.LeaseTTL)
	if err != nil {
		return 0, 0, err
	}
	defer leases.stop()
	for i := 0; i < len(events); {
		j := i
		for j < len(events) && events[j].ModRevision == events[i].ModRevision {
			j++
		}
		if err := applyRevision(ctx, cli, leases, events[i:j]); err != nil {
			return revs, leases.granted, fmt.Errorf("revision %d (%d changes): %w", events[i].ModRevision, j-i, err)
		}
		revs++
		i = j
	}
	return revs, leases.granted, nil
}

// Limits of one etcd request (--max-txn-ops default 128, request size
// 1.5 MiB): a revision that deleted a whole prefix can exceed them, and is
// then applied in parts. Nobody reads the replay etcd meanwhile, so the
// end state is the same.
const (
	maxReplayOps   = 128
	maxReplayBytes = 1 << 20
)

func applyRevision(ctx context.Context, cli *clientv3.Client, leases *replayLeases, evs []snapread.Event) error {
	var ops []clientv3.Op
	size := 0
	commit := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops, size = ops[:0], 0
		return err
	}
	for _, e := range evs {
		n := len(e.Key) + len(e.Value)
		if len(ops) == maxReplayOps || (len(ops) > 0 && size+n > maxReplayBytes) {
			if err := commit(); err != nil {
				return err
			}
		}
		if e.Type == snapread.EventPut {
			if err := leases.ensure(ctx, e.Lease); err != nil {
				return fmt.Errorf("put %s: %w", e.Key, err)
			}
			var opts []clientv3.OpOption
			if e.Lease != 0 {
				opts = append(opts, clientv3.WithLease(clientv3.LeaseID(e.Lease)))
			}
			ops = append(ops, clientv3.OpPut(e.Key, string(e.Value), opts...))
		} else {
			ops = append(ops, clientv3.OpDelete(e.Key))
		}
		size += n
	}
	return commit()
}
