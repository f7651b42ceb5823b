package ecsfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveMetadata answers the instance metadata service the way
// 100.100.100.200 does: plain-text values, IMDSv2 tokens from
// PUT /latest/api/token, and the RAM role's STS credentials as JSON.
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-aliyun-ecs-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "invalid ttl", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.seq++
		tok := fmt.Sprintf("imds-token-%d", s.seq)
		s.imdsToks[tok] = s.opts.WallClock().Add(time.Duration(ttl) * time.Second)
		s.mu.Unlock()
		_, _ = w.Write([]byte(tok))
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok := r.Header.Get("X-aliyun-ecs-metadata-token"); tok != "" {
		exp, ok := s.imdsToks[tok]
		if !ok || s.opts.WallClock().After(exp) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	} else if s.opts.RequireIMDSv2 {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	self := s.instances[s.selfID]
	const prefix = "/latest/meta-data/"
	if !strings.HasPrefix(r.URL.Path, prefix) || self == nil {
		http.NotFound(w, r)
		return
	}
	switch key := strings.TrimPrefix(r.URL.Path, prefix); key {
	case "instance-id":
		_, _ = w.Write([]byte(self.id))
	case "region-id":
		_, _ = w.Write([]byte(s.opts.Region))
	case "zone-id":
		_, _ = w.Write([]byte(self.zone))
	case "ram/security-credentials/":
		if s.ramRole == "" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(s.ramRole))
	default:
		role, ok := strings.CutPrefix(key, "ram/security-credentials/")
		if !ok || role == "" || role != s.ramRole {
			http.NotFound(w, r)
			return
		}
		now := s.opts.WallClock().UTC()
		w.Header().Set("Content-Type", "text/plain")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId":     s.ramKey.id,
			"AccessKeySecret": s.ramKey.secret,
			"SecurityToken":   s.ramKey.token,
			"Expiration":      now.Add(6 * time.Hour).Format(isoSeconds),
			"LastUpdated":     now.Format(isoSeconds),
			"Code":            "Success",
		})
	}
}
