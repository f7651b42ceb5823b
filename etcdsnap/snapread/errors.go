package snapread

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel kinds. Every failure that reaches an operator is an *Error whose
// Kind is one of these, so callers can branch with errors.Is and the message
// still names the endpoint or file that failed.
var (
	// ErrCertFile: a CA, certificate or key file is missing or unreadable.
	ErrCertFile = errors.New("certificate file unusable")
	// ErrCertExpired: the client certificate is outside its validity window.
	ErrCertExpired = errors.New("client certificate expired or not yet valid")
	// ErrUnknownAuthority: the server certificate is not signed by the CA we
	// trust, or the server rejected our client certificate's issuer.
	ErrUnknownAuthority = errors.New("certificate signed by unknown authority")
	// ErrTLS: any other TLS handshake failure (bad SAN, bad certificate).
	ErrTLS = errors.New("TLS handshake failed")
	// ErrUnreachable: nothing listens on the endpoint (connection refused,
	// no route).
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrTimeout: the endpoint did not answer in time.
	ErrTimeout = errors.New("etcd did not answer in time")
	// ErrStreamCut: the snapshot stream ended before the server finished.
	ErrStreamCut = errors.New("snapshot stream cut")
	// ErrBadTrailer: the stream ended but its sha256 trailer is missing or
	// does not match the data: the image cannot be trusted.
	ErrBadTrailer = errors.New("snapshot sha256 trailer mismatch")
	// ErrSink: writing the snapshot to the destination failed; etcd is fine.
	ErrSink = errors.New("writing snapshot failed")
	// ErrCorruptDB: bbolt's consistency check or etcd's layout check failed.
	ErrCorruptDB = errors.New("snapshot database corrupt")
	// ErrDataDirLocked: a raw copy was asked for while etcd holds the db.
	ErrDataDirLocked = errors.New("etcd data dir is in use")
	// ErrCheckInterrupted: the snapshot's check process was killed from
	// outside; nothing is known about the image.
	ErrCheckInterrupted = errors.New("snapshot check interrupted")
	// ErrRPC: etcd answered with an error not covered above.
	ErrRPC = errors.New("etcd request failed")
)

// Error is a failure with the context an operator needs to fix it.
type Error struct {
	Op       string // "connect", "status", "snapshot", "check", "raw copy", ...
	Endpoint string // the etcd endpoint involved, if any
	File     string // the certificate or database file involved, if any
	Kind     error  // one of the Err* sentinels
	Err      error  // the underlying cause, may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("etcd ")
	b.WriteString(e.Op)
	if e.Endpoint != "" {
		fmt.Fprintf(&b, " %s", e.Endpoint)
	}
	if e.File != "" {
		fmt.Fprintf(&b, " (%s)", e.File)
	}
	fmt.Fprintf(&b, ": %v", e.Kind)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTimeout) and friends work.
func (e *Error) Is(target error) bool { return target == e.Kind }

func (e *Error) Unwrap() error { return e.Err }
