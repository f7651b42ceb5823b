package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
)

// Snapshot streams a consistent snapshot from the first endpoint of cc that
// answers into w, checking the sha256 trailer on the way (w receives the
// exact stream, trailer included, like `etcdctl snapshot save`). Nothing is
// buffered beyond one chunk. The returned Info is not yet Verified: call
// Info.Check on the materialised image before counting the snapshot.
//
// On error the Info still carries what is known (endpoint, bytes so far)
// and its Error field, never Verified or TrailerVerified.
func Snapshot(ctx context.Context, cc ClientConfig, w io.Writer) (snapread.Info, error) {
	info := snapread.Info{Source: snapread.SourceAPI, Started: time.Now()}
	fail := func(err error) (snapread.Info, error) {
		info.Verified, info.TrailerVerified = false, false
		info.Error = err.Error()
		info.Duration = time.Since(info.Started).Seconds()
		return info, err
	}
	cli, st, ep, err := ConnectAny(ctx, cc)
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	info.Endpoint = ep
	info.EtcdVersion = st.Version
	info.StatusDBSize = st.DbSize
	if st.Header != nil {
		info.StatusRevision = st.Header.Revision
		info.Revision = st.Header.Revision
		info.ClusterID = st.Header.ClusterId
		info.MemberID = st.Header.MemberId
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream on an early return
	stream, err := openSnapshotStream(sctx, cli)
	if err != nil {
		return fail(streamError(ctx, ep, "open snapshot stream", 0, err))
	}
	info.StorageVersion = stream.Version()

	v := snapread.NewTrailerVerifier(w)
	_, err = stream.WriteTo(v)
	info.StreamBytes = v.Size()
	if err != nil {
		if v.SinkErr() != nil {
			return fail(&snapread.Error{Op: "snapshot", Endpoint: ep, Kind: snapread.ErrSink, Err: v.SinkErr()})
		}
		return fail(streamError(ctx, ep, "snapshot stream", v.Size(), err))
	}
	sum, err := v.Finish()
	if err != nil {
		return fail(&snapread.Error{Op: "snapshot", Endpoint: ep, Kind: snapread.ErrBadTrailer, Err: err})
	}
	info.TrailerVerified = true
	info.SHA256 = sum
	info.DBSize = v.Size() - snapread.TrailerSize
	info.Duration = time.Since(info.Started).Seconds()
	return info, nil
}

func streamError(ctx context.Context, ep, what string, n int64, err error) error {
	kind := snapread.ErrStreamCut
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		kind = snapread.ErrTimeout
	}
	return &snapread.Error{Op: "snapshot", Endpoint: ep, Kind: kind, Err: fmt.Errorf("%s broke after %d bytes: %w", what, n, err)}
}
