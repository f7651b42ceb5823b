package oss

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"net/http"
	"strconv"
	"strings"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	where := b.where(h)
	if length < 0 || offset < 0 {
		return fmt.Errorf("load %s: negative range %d+%d", where, offset, length)
	}
	req := &alioss.GetObjectRequest{Bucket: &b.cfg.Bucket, Key: &key, RangeBehavior: alioss.Ptr("standard")}
	whole := offset == 0 && length == 0
	if !whole {
		req.Range = alioss.HTTPRange{Offset: offset, Count: int64(length)}.FormatHTTPRange()
	}
	res, err := b.cli.GetObject(ctx, req)
	if err != nil {
		var se *alioss.ServiceError
		if errors.As(err, &se) && se.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			// The start is at or past the end: reading nothing from the
			// very end is fine, past it is not.
			fi, serr := b.Stat(ctx, h)
			if serr != nil {
				return serr
			}
			if length == 0 && offset == fi.Size {
				return fn(strings.NewReader(""))
			}
			return fmt.Errorf("load %s: range %d+%d of %d bytes: %w", where, offset, length, fi.Size, backend.ErrShortRead)
		}
		return b.wrap("load", where, err)
	}
	defer res.Body.Close()
	want := res.ContentLength
	if length > 0 {
		want = int64(length)
		if res.ContentLength >= 0 && res.ContentLength < want {
			return fmt.Errorf("load %s: range %d+%d, OSS has only %d bytes there: %w", where, offset, length, res.ContentLength, backend.ErrShortRead)
		}
	} else if !whole {
		// To the end: the size is in Content-Range.
		total, ok := contentRangeTotal(alioss.ToString(res.ContentRange))
		if !ok || res.ContentLength != total-offset {
			return fmt.Errorf("load %s: OSS answered range %d- with %q and %d bytes", where, offset, alioss.ToString(res.ContentRange), res.ContentLength)
		}
	}
	if want < 0 {
		return fmt.Errorf("load %s: OSS sent no Content-Length", where)
	}
	if !whole && res.ContentRange == nil {
		// A 200 with the whole object: the range was not honoured.
		return fmt.Errorf("load %s: OSS ignored range %d+%d", where, offset, length)
	}
	er := &exactReader{r: res.Body, left: want}
	if whole {
		er.crc, er.wantCRC = crc64.New(crcTable), alioss.ToString(res.HashCRC64)
	}
	if err := fn(er); err != nil {
		return fmt.Errorf("load %s: %w", where, err)
	}
	return nil
}

func contentRangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

// exactReader fails rather than end early: a connection cut mid-body is
// an error, never a short object. With crc set, the end is checked
// against OSS's CRC64 of the object.
type exactReader struct {
	r       io.Reader
	left    int64
	crc     hash.Hash64
	wantCRC string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, e.end()
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if e.crc != nil {
		e.crc.Write(p[:n])
	}
	if e.left == 0 {
		return n, e.end()
	}
	if err == io.EOF {
		err = fmt.Errorf("%w: %d bytes missing", io.ErrUnexpectedEOF, e.left)
	}
	return n, err
}

func (e *exactReader) end() error {
	if e.crc != nil && e.wantCRC != "" {
		if got := strconv.FormatUint(e.crc.Sum64(), 10); got != e.wantCRC {
			return fmt.Errorf("the object read has CRC64 %s, OSS has %s", got, e.wantCRC)
		}
	}
	return io.EOF
}
