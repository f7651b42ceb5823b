package oss

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"strconv"
	"time"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/kubekeep/kubekeep/internal/ctxio"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

var crcTable = crc64.MakeTable(crc64.ECMA)

// readFull reads exactly len(p) bytes of the object's n.
func readFull(r io.Reader, p []byte, read, n int64) error {
	got, err := io.ReadFull(r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("the reader gave %d bytes, %d announced", read+int64(got), n)
	}
	return err
}

// atEnd checks that the reader has nothing past the announced length.
func atEnd(r io.Reader, n int64) error {
	var one [1]byte
	m, err := r.Read(one[:])
	if m > 0 {
		return fmt.Errorf("the reader gives more than the %d bytes announced", n)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Save implements backend.Backend.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	where := b.where(h)
	if b.versioned {
		if _, err := b.Stat(ctx, h); err == nil {
			return fmt.Errorf("save %s: %w", where, backend.ErrExists)
		} else if !errors.Is(err, backend.ErrNotFound) {
			return err
		}
	}
	if err := rd.Rewind(); err != nil {
		return fmt.Errorf("save %s: %w", where, err)
	}
	n := rd.Length()
	r := ctxio.Reader(ctx, rd)
	crc := crc64.New(crcTable)
	if n <= b.cfg.PartSize {
		err = b.putSingle(ctx, key, r, n, crc)
	} else {
		err = b.putMultipart(ctx, key, r, n, crc)
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, backend.ErrExists) && b.landed(ctx, key, n, crc) {
		return nil
	}
	if code(err) != "" || errors.Is(err, backend.ErrExists) {
		return b.wrap("save", where, err)
	}
	return fmt.Errorf("save %s: %w", where, err)
}

// landed says whether key holds n bytes of the CRC64 the save computed:
// an earlier attempt of the same save got through.
func (b *Backend) landed(ctx context.Context, key string, n int64, crc hash.Hash64) bool {
	hr, err := b.cli.HeadObject(ctx, &alioss.HeadObjectRequest{Bucket: &b.cfg.Bucket, Key: &key})
	return err == nil && hr.ContentLength == n && alioss.ToString(hr.HashCRC64) == strconv.FormatUint(crc.Sum64(), 10)
}

func md5b64(p []byte) string {
	sum := md5.Sum(p)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (b *Backend) putSingle(ctx context.Context, key string, r io.Reader, n int64, crc hash.Hash64) error {
	buf := make([]byte, n)
	if err := readFull(r, buf, 0, n); err != nil {
		return err
	}
	if err := atEnd(r, n); err != nil {
		return err
	}
	crc.Write(buf)
	_, err := b.cli.PutObject(ctx, &alioss.PutObjectRequest{
		Bucket: &b.cfg.Bucket, Key: &key,
		Body:            bytes.NewReader(buf),
		ContentLength:   alioss.Ptr(n),
		ContentMD5:      alioss.Ptr(md5b64(buf)),
		ContentType:     alioss.Ptr("application/octet-stream"),
		ForbidOverwrite: alioss.Ptr("true"),
	})
	if code(err) == "FileAlreadyExists" {
		return backend.ErrExists
	}
	return err
}

func (b *Backend) putMultipart(ctx context.Context, key string, r io.Reader, n int64, crc hash.Hash64) (err error) {
	init, err := b.cli.InitiateMultipartUpload(ctx, &alioss.InitiateMultipartUploadRequest{
		Bucket: &b.cfg.Bucket, Key: &key,
		ContentType:     alioss.Ptr("application/octet-stream"),
		ForbidOverwrite: alioss.Ptr("true"),
	})
	if code(err) == "FileAlreadyExists" {
		return backend.ErrExists
	}
	if err != nil {
		return err
	}
	uploadID := init.UploadId
	defer func() {
		if err == nil {
			return
		}
		// The save's context may be what failed: abort on one of its own.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, aerr := b.cli.AbortMultipartUpload(actx, &alioss.AbortMultipartUploadRequest{Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID}); aerr != nil {
			err = fmt.Errorf("%w (and aborting upload %s failed: %v)", err, alioss.ToString(uploadID), b.wrap("abort", key, aerr))
		}
	}()
	buf := make([]byte, b.cfg.PartSize)
	var parts []alioss.UploadPart
	for read, num := int64(0), int32(1); read < n; num++ {
		p := buf[:min(b.cfg.PartSize, n-read)]
		if err := readFull(r, p, read, n); err != nil {
			return err
		}
		read += int64(len(p))
		crc.Write(p)
		pr, err := b.cli.UploadPart(ctx, &alioss.UploadPartRequest{
			Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID, PartNumber: num,
			Body:          bytes.NewReader(p),
			ContentLength: alioss.Ptr(int64(len(p))),
			ContentMD5:    alioss.Ptr(md5b64(p)),
		})
		if err != nil {
			return err
		}
		parts = append(parts, alioss.UploadPart{PartNumber: num, ETag: pr.ETag})
	}
	if err := atEnd(r, n); err != nil {
		return err
	}
	cr, err := b.cli.CompleteMultipartUpload(ctx, &alioss.CompleteMultipartUploadRequest{
		Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID,
		ForbidOverwrite:         alioss.Ptr("true"),
		CompleteMultipartUpload: &alioss.CompleteMultipartUpload{Parts: parts},
	})
	if code(err) == "FileAlreadyExists" {
		return backend.ErrExists
	}
	if err != nil {
		return err
	}
	if got, want := alioss.ToString(cr.HashCRC64), strconv.FormatUint(crc.Sum64(), 10); got != "" && got != want {
		// Completed: the upload is gone, there is nothing to abort.
		return fmt.Errorf("OSS stored CRC64 %s, the data sent has %s", got, want)
	}
	return nil
}
