package cloudsnap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

// RetryPolicy is exponential backoff with jitter for calls ECS refused
// for load (Throttling*, ServiceUnavailable, other 5xx) or that never got an
// answer. Creates carry a ClientToken, so repeating them is safe.
type RetryPolicy struct {
	// Attempts is the most calls made in total (default 8).
	Attempts int
	// Base is the first backoff, doubled each time up to Max (defaults 1s, 30s).
	Base, Max time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = 8
	}
	if p.Base <= 0 {
		p.Base = time.Second
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	return p
}

// backoff is "equal jitter": half the exponential step, plus up to half at
// random, so a fleet of agents throttled together does not retry together.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.Base << min(attempt, 20)
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// APIError is an error ECS answered, with what an operator needs to act on
// it or to quote it to Alibaba Cloud support.
type APIError struct {
	Action     string
	Code       string
	Message    string
	RequestID  string
	HTTPStatus int
	Recommend  string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("ECS %s failed: %s: %s (RequestId %s, HTTP %d)", e.Action, e.Code, e.Message, e.RequestID, e.HTTPStatus)
	if e.Recommend != "" {
		msg += "; " + e.Recommend
	}
	return msg
}

// IsCode reports whether err is an ECS error with this code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// stringToSignMarker starts the part of a SignatureDoesNotMatch message
// that echoes the signed parameters — the access key id and any STS
// security token among them — so it must never reach a log.
const stringToSignMarker = "server string to sign is:"

func toAPIError(action string, err error) error {
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) || se == nil {
		return err
	}
	msg := se.Message()
	if i := strings.Index(msg, stringToSignMarker); i >= 0 {
		msg = strings.TrimSpace(msg[:i]) + " (the server's string to sign is withheld: it contains credentials)"
	}
	return &APIError{Action: action, Code: se.ErrorCode(), Message: msg, RequestID: se.RequestId(),
		HTTPStatus: se.HttpStatus(), Recommend: se.Recommend()}
}

var credentialParam = regexp.MustCompile(`(?i)(AccessKeyId|AccessKeySecret|SecurityToken|BearerToken|Signature)=[^&\s"]*`)

// redact strips credentials out of errors that quote the request: with
// RPC-style calls every parameter, the access key id, signature and STS
// token included, is in the URL a transport error prints.
func redact(err error) error {
	if _, ok := err.(*APIError); ok {
		return err
	}
	return errors.New(credentialParam.ReplaceAllString(err.Error(), "$1=REDACTED"))
}

// retryable is true for answers that mean "try again later".
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return strings.HasPrefix(ae.Code, "Throttling") || ae.Code == "ServiceUnavailable" || ae.HTTPStatus >= 500
	}
	var ce *sdkerrors.ClientError
	if errors.As(err, &ce) {
		return ce.ErrorCode() == sdkerrors.TimeoutErrorCode
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// do runs one ECS call with retries. waitBusyDisk also waits out
// IncorrectDiskStatus.CreatingSnapshot (a snapshot of the disk is still
// being made), polling until WaitTimeout.
func (c *Client) do(ctx context.Context, action string, waitBusyDisk bool, call func() error) error {
	var busyDeadline time.Time
	attempt := 0
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ECS %s: %w", action, err)
		}
		raw := call()
		if raw == nil {
			return nil
		}
		converted := toAPIError(action, raw)
		retry := retryable(converted)
		err := redact(converted)
		if waitBusyDisk && IsCode(err, "IncorrectDiskStatus.CreatingSnapshot") {
			if busyDeadline.IsZero() {
				busyDeadline = c.clock.Now().Add(c.opts.WaitTimeout)
				c.log.Info("a snapshot of the disk is still being made; waiting for it", "action", action)
			}
			if !c.clock.Now().Before(busyDeadline) {
				return fmt.Errorf("%w after %s: %w", ErrTimeout, c.opts.WaitTimeout, err)
			}
			if serr := c.clock.Sleep(ctx, c.opts.PollInterval); serr != nil {
				return fmt.Errorf("ECS %s: %w", action, serr)
			}
			continue
		}
		attempt++
		if !retry {
			if _, ok := err.(*APIError); ok {
				return err
			}
			return fmt.Errorf("ECS %s: %w", action, err)
		}
		if attempt >= c.opts.Retry.Attempts {
			return fmt.Errorf("ECS %s: giving up after %d attempts: %w", action, attempt, err)
		}
		d := c.opts.Retry.backoff(attempt - 1)
		c.log.Warn("ECS call refused for now; retrying", "action", action, "attempt", attempt, "backoff", d, "error", err)
		if serr := c.clock.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("ECS %s: %w", action, serr)
		}
	}
}
