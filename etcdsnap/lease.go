package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultReplayLeaseTTL is the least TTL a replay grants a lease the
// snapshot does not hold (see RestoreConfig.LeaseTTL): the kube-apiserver's
// --event-ttl default (1h) plus the 60 s its lease manager adds for reusing
// one lease. A key living longer than its owner asked costs little (the
// owner rewrites or deletes it); one expiring early is an Event lost.
const DefaultReplayLeaseTTL = time.Hour + time.Minute

// replayLeases keeps the leases of a replay: the snapshot's, which the
// replay etcd recovers from the db's lease bucket with their IDs and TTLs,
// and those granted after the snapshot, which the watch never sees (only
// keys put under them) and which are granted again with the same ID. All
// are kept alive while the replay runs: a lease expiring in the replay
// etcd would delete keys the original still held at the target, and the
// restored state would differ from it. Once the restored etcd runs, each
// lease expires a TTL after its start unless its owner renews it.
type replayLeases struct {
	cli *clientv3.Client
	lg  *zap.Logger
	// ttl is what a lease unknown to the snapshot is granted with.
	ttl int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	known  map[int64]bool
	// Granted counts the leases granted again.
	granted int
}

// newReplayLeases lists the leases the replay etcd recovered from the
// snapshot and keeps them alive. ttl (zero: the longest TTL among the
// snapshot's leases, at least DefaultReplayLeaseTTL) is what a lease
// granted after the snapshot gets.
func newReplayLeases(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, ttl time.Duration) (*replayLeases, error) {
	l := &replayLeases{cli: cli, lg: lg, known: map[int64]bool{}}
	l.ctx, l.cancel = context.WithCancel(ctx)
	resp, err := cli.Leases(ctx)
	if err != nil {
		l.cancel()
		return nil, fmt.Errorf("list the snapshot's leases: %w", err)
	}
	var longest int64
	for _, ls := range resp.Leases {
		l.known[int64(ls.ID)] = true
		if ttl == 0 {
			t, err := cli.TimeToLive(ctx, ls.ID)
			if err != nil {
				l.stop()
				return nil, fmt.Errorf("read lease %x: %w", int64(ls.ID), err)
			}
			longest = max(longest, t.GrantedTTL)
		}
		if err := l.keepAlive(ls.ID); err != nil {
			l.stop()
			return nil, err
		}
	}
	if ttl > 0 {
		l.ttl = max(1, int64(ttl/time.Second))
	} else {
		// A snapshot taken before any Event may hold only short leases
		// (/registry/masterleases: 15 s); Events must not get those.
		l.ttl = max(longest, int64(DefaultReplayLeaseTTL/time.Second))
	}
	lg.Debug("replay leases", zap.Int("fromSnapshot", len(resp.Leases)), zap.Int64("ttlForNew", l.ttl))
	return l, nil
}

func (l *replayLeases) keepAlive(id clientv3.LeaseID) error {
	ch, err := l.cli.KeepAlive(l.ctx, id)
	if err != nil {
		return fmt.Errorf("keep lease %x alive: %w", int64(id), err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for range ch {
		}
	}()
	return nil
}

// ensure makes lease id exist in the replay etcd: as the snapshot had it,
// or granted now with that ID.
func (l *replayLeases) ensure(ctx context.Context, id int64) error {
	if id == 0 || l.known[id] {
		return nil
	}
	_, err := etcdserverpb.NewLeaseClient(l.cli.ActiveConnection()).LeaseGrant(ctx, &etcdserverpb.LeaseGrantRequest{ID: id, TTL: l.ttl})
	if err != nil && !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) {
		return fmt.Errorf("grant lease %x (granted after the snapshot) again: %w", id, err)
	}
	l.known[id] = true
	l.granted++
	return l.keepAlive(clientv3.LeaseID(id))
}

// stop ends the keep-alives; the leases stay in the db.
func (l *replayLeases) stop() {
	l.cancel()
	l.wg.Wait()
}
