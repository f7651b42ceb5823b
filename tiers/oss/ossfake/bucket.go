package ossfake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"time"
)

// wormInProgressTTL is how long a retention policy stays InProgress
// before OSS drops it unless it is locked.
const wormInProgressTTL = 24 * time.Hour

type versioningResult struct {
	XMLName xml.Name `xml:"VersioningConfiguration"`
	Status  string   `xml:"Status,omitempty"`
}

func (s *Server) getVersioning(b *bucket, _ string, _ query, _ *http.Request, _ []byte) (response, *apiError) {
	return response{xml: versioningResult{Status: b.versioning}}, nil
}

// expireWorm drops InProgress policies older than a day. s.mu is held.
func (s *Server) expireWorm() {
	now := s.opts.Now()
	for _, b := range s.buckets {
		if w := b.worm; w != nil && w.state == "InProgress" && now.Sub(w.created) >= wormInProgressTTL {
			b.worm = nil
		}
	}
}

func noSuchWorm() *apiError {
	return errorf(http.StatusNotFound, "NoSuchWORMConfiguration", "0027-00000101", "The WORM Configuration does not exist.")
}

type wormResult struct {
	XMLName               xml.Name `xml:"WormConfiguration"`
	WormID                string   `xml:"WormId"`
	State                 string   `xml:"State"`
	RetentionPeriodInDays int32    `xml:"RetentionPeriodInDays"`
	CreationDate          string   `xml:"CreationDate"`
	ExpirationDate        string   `xml:"ExpirationDate,omitempty"`
}

func (s *Server) getWorm(b *bucket, _ string, _ query, _ *http.Request, _ []byte) (response, *apiError) {
	w := b.worm
	if w == nil {
		return response{}, noSuchWorm()
	}
	res := wormResult{WormID: w.id, State: w.state, RetentionPeriodInDays: w.days,
		CreationDate: w.created.UTC().Format("2006-01-02T15:04:05.000Z")}
	if w.state == "InProgress" {
		res.ExpirationDate = w.created.Add(wormInProgressTTL).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return response{xml: res}, nil
}

func (s *Server) initiateWorm(b *bucket, _ string, _ query, _ *http.Request, body []byte) (response, *apiError) {
	var req struct {
		Days int32 `xml:"RetentionPeriodInDays"`
	}
	if err := xml.Unmarshal(body, &req); err != nil {
		return response{}, errorf(http.StatusBadRequest, "MalformedXML", "0027-00000001", "The XML you provided was not well-formed.")
	}
	if req.Days < 1 || req.Days > 25550 {
		return response{}, errorf(http.StatusBadRequest, "InvalidArgument", "0027-00000002", "RetentionPeriodInDays must be between 1 and 25550.")
	}
	if b.versioning == "Suspended" {
		return response{}, errorf(http.StatusConflict, "InvalidBucketState", "0027-00000003", "A retention policy cannot be configured while versioning is suspended.")
	}
	if b.worm != nil {
		return response{}, errorf(http.StatusConflict, "WORMConfigurationExists", "0027-00000004", "The bucket already has a retention policy.")
	}
	s.seq++
	b.worm = &worm{id: fmt.Sprintf("%032X", s.seq), state: "InProgress", days: req.Days, created: s.opts.Now()}
	return response{headers: map[string]string{"x-oss-worm-id": b.worm.id}}, nil
}

func (s *Server) completeWorm(b *bucket, _ string, q query, _ *http.Request, _ []byte) (response, *apiError) {
	w := b.worm
	if w == nil || w.id != q.get("wormId") {
		return response{}, noSuchWorm()
	}
	w.state = "Locked"
	return response{}, nil
}

func (s *Server) abortWorm(b *bucket, _ string, _ query, _ *http.Request, _ []byte) (response, *apiError) {
	w := b.worm
	if w == nil {
		return response{}, noSuchWorm()
	}
	if w.state == "Locked" {
		return response{}, errorf(http.StatusConflict, "WORMConfigurationLocked", "0027-00000005", "A locked retention policy cannot be removed.")
	}
	b.worm = nil
	return response{status: http.StatusNoContent}, nil
}
