package snapread

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// Sources of a snapshot image.
const (
	SourceAPI = "api" // Maintenance.Snapshot: consistent, with sha256 trailer
	SourceRaw = "raw" // member/snap/db copied while no etcd held it
	// SourceJournal: no snapshot of its own; the state is the snapshot of
	// version Base (at BaseRevision) and the delta journal up to Revision.
	SourceJournal = "journal"
)

// TrailerSize is the sha256 digest etcd appends to a snapshot stream.
const TrailerSize = sha256.Size

// Info describes one snapshot. The first five JSON names are the contract of
// `kubekeep versions -o json` (issue 4) and must not change.
type Info struct {
	Revision int64  `json:"revision"`
	Keys     int64  `json:"keys"`
	DBSize   int64  `json:"dbSize"`
	Verified bool   `json:"verified"`
	Source   string `json:"source"`

	// TrailerVerified: the stream's sha256 trailer matched its data. A raw
	// copy has no trailer; SHA256 is then computed over the copy.
	TrailerVerified bool   `json:"trailerVerified,omitempty"`
	SHA256          string `json:"sha256,omitempty"`
	// StreamBytes is what was written to the destination (db + trailer).
	StreamBytes    int64  `json:"streamBytes,omitempty"`
	EtcdVersion    string `json:"etcdVersion,omitempty"`
	StorageVersion string `json:"storageVersion,omitempty"`
	ClusterID      uint64 `json:"clusterID,omitempty"`
	MemberID       uint64 `json:"memberID,omitempty"`
	// StatusRevision and StatusDBSize come from the Status call just before
	// the stream opened; Revision is the exact one read from the image.
	StatusRevision int64     `json:"statusRevision,omitempty"`
	StatusDBSize   int64     `json:"statusDbSize,omitempty"`
	Endpoint       string    `json:"endpoint,omitempty"`
	DataDir        string    `json:"dataDir,omitempty"`
	Started        time.Time `json:"started,omitzero"`
	Duration       float64   `json:"durationSeconds,omitempty"`
	Error          string    `json:"error,omitempty"`

	// Base and BaseRevision: for a journal version (Source "journal"), the
	// version whose snapshot stream it builds on and that snapshot's
	// revision; Revision is then the journal's revision the state is at.
	Base         string `json:"base,omitempty"`
	BaseRevision int64  `json:"baseRevision,omitempty"`

	// KeyIndexPath is the key index Check wrote beside the image (key ->
	// revision and location of its value in the image), or empty when it
	// wrote none; the backup stores it as a stream of the version.
	KeyIndexPath string `json:"-"`

	// exports are the stored values of kubeadm's ConfigMaps Check found,
	// by etcd key (KubeadmDocument).
	exports map[string][]byte
}

// Check opens the materialised image at path (the bytes written to the
// Snapshot writer, trailer included or not), runs bbolt's consistency check
// and fills Revision and Keys from it. Only then is the Info Verified: an
// API snapshot also needs its trailer to have matched. On failure Error is
// set and Verified stays false.
func (i *Info) Check(path string) (DBStats, error) {
	startedCheck := time.Now().Add(-time.Second) // mtime granularity
	st, exports, err := checkInChild(path)
	i.exports = exports
	if err != nil {
		i.Verified = false
		i.Error = err.Error()
		return st, err
	}
	i.Revision = st.Revision
	i.Keys = st.Keys
	i.KeyIndexPath = ""
	if fi, err := os.Stat(KeyIndexPathFor(path)); err == nil && fi.Mode().IsRegular() && !fi.ModTime().Before(startedCheck) {
		i.KeyIndexPath = KeyIndexPathFor(path)
	}
	i.Verified = i.Source == SourceRaw || i.TrailerVerified
	if !i.Verified && i.Error == "" {
		i.Error = "snapshot trailer was not verified"
	}
	return st, nil
}

// CopyVerified copies a snapshot stream from r to w and checks its sha256
// trailer; use it to re-verify a stored snapshot. It returns the bytes
// copied and the hex digest.
func CopyVerified(w io.Writer, r io.Reader) (int64, string, error) {
	v := NewTrailerVerifier(w)
	if _, err := io.CopyBuffer(v, r, make([]byte, 1<<20)); err != nil {
		if v.sinkErr != nil {
			return v.size, "", &Error{Op: "verify", Kind: ErrSink, Err: v.sinkErr}
		}
		return v.size, "", &Error{Op: "verify", Kind: ErrStreamCut, Err: fmt.Errorf("reading after %d bytes: %w", v.size, err)}
	}
	sum, err := v.Finish()
	if err != nil {
		return v.size, "", &Error{Op: "verify", Kind: ErrBadTrailer, Err: err}
	}
	return v.size, sum, nil
}

// TrailerVerifier passes every byte through to w and hashes all but the
// last TrailerSize bytes seen so far, which it holds back as the candidate
// trailer: the end of the stream is only known when it ends.
type TrailerVerifier struct {
	w       io.Writer
	h       hash.Hash
	tail    [TrailerSize]byte
	tn      int
	size    int64
	sinkErr error
}

// NewTrailerVerifier passes what is written on to w.
func NewTrailerVerifier(w io.Writer) *TrailerVerifier {
	return &TrailerVerifier{w: w, h: sha256.New()}
}

// Size is the bytes written so far (trailer included).
func (v *TrailerVerifier) Size() int64 { return v.size }

// SinkErr is the error w returned, if any.
func (v *TrailerVerifier) SinkErr() error { return v.sinkErr }

func (v *TrailerVerifier) Write(p []byte) (int, error) {
	n, err := v.w.Write(p)
	v.size += int64(n)
	v.hash(p[:n])
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		v.sinkErr = err
	}
	return n, err
}

func (v *TrailerVerifier) hash(p []byte) {
	if len(p) >= TrailerSize {
		v.h.Write(v.tail[:v.tn])
		v.h.Write(p[:len(p)-TrailerSize])
		v.tn = copy(v.tail[:], p[len(p)-TrailerSize:])
		return
	}
	var buf [2 * TrailerSize]byte
	all := append(append(buf[:0], v.tail[:v.tn]...), p...)
	if over := len(all) - TrailerSize; over > 0 {
		v.h.Write(all[:over])
		all = all[over:]
	}
	v.tn = copy(v.tail[:], all)
}

// Finish checks the trailer against the data before it and returns the
// hex digest.
func (v *TrailerVerifier) Finish() (string, error) {
	// etcd pads nothing: a bbolt image is whole pages (multiples of 512),
	// so a stream with a trailer has size % 512 == 32.
	if v.size < TrailerSize || v.size%512 != TrailerSize {
		return "", fmt.Errorf("stream of %d bytes has no sha256 trailer (size %% 512 = %d, want %d)", v.size, v.size%512, TrailerSize)
	}
	sum := v.h.Sum(nil)
	if !bytes.Equal(sum, v.tail[:]) {
		return "", fmt.Errorf("data hashes to %x, trailer says %x", sum, v.tail[:])
	}
	return hex.EncodeToString(sum), nil
}

// KeyIndexPathFor is where the check of the image at path writes its key
// index: beside it, with ".keys" appended.
func KeyIndexPathFor(path string) string { return path + ".keys" }
