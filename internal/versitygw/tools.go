//go:build tools

// Package tools pins versitygw, the S3 server the off-site tests run
// against (Apache-2.0, github.com/versity/versitygw): a module of its own
// so its dependencies never meet the main module's. `go test ./...` of the
// main module skips it; internal/s3test builds its command once, cached
// by content (internal/gobuild).
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
