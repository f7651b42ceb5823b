package cloudsnap

import (
	"strings"
	"testing"
)

func FuzzParseRollbackState(f *testing.F) {
	f.Add([]byte(`{"version":1,"instanceId":"i-1","region":"cn-hangzhou","setId":"kk-1","safetyDone":true,"phase":"reset","disks":[{"diskId":"d-1","snapshotId":"s-1","resetFrom":"kk-1"}],"startedAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":1,"phase":"nope"}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseRollbackState(data)
		if err != nil {
			return
		}
		// Whatever parses must be a state a rollback can act on safely.
		if st.Version != 1 || len(st.Disks) == 0 || !idPattern.MatchString(st.SetID) || !idPattern.MatchString(st.InstanceID) {
			t.Fatalf("accepted an unusable state: %+v", st)
		}
		if _, ok := phaseOrder[st.Phase]; !ok {
			t.Fatalf("accepted phase %q", st.Phase)
		}
		seen := map[string]bool{}
		for _, d := range st.Disks {
			if seen[d.DiskID] || !idPattern.MatchString(d.DiskID) || !idPattern.MatchString(d.SnapshotID) {
				t.Fatalf("accepted disk %+v", d)
			}
			seen[d.DiskID] = true
		}
	})
}

func FuzzParseRoleCredentials(f *testing.F) {
	f.Add([]byte(`{"AccessKeyId":"STS.a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2026-01-01T00:00:00Z","Code":"Success"}`))
	f.Add([]byte(`{"Code":"Failed","AccessKeySecret":"topsecret"}`))
	f.Add([]byte(`not json topsecret`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, err := ParseRoleCredentials(data)
		if err != nil {
			// The body holds secrets: an error must not echo it.
			if len(data) >= 8 && strings.Contains(err.Error(), string(data)) {
				t.Fatalf("error quotes the body: %v", err)
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Fatalf("error quotes a secret: %v", err)
			}
			return
		}
		if rc.AccessKeyID == "" || rc.AccessKeySecret == "" || rc.SecurityToken == "" || rc.Expiration.IsZero() {
			t.Fatalf("accepted incomplete credentials")
		}
	})
}

func FuzzParseMetadataValue(f *testing.F) {
	f.Add([]byte("i-bp1abc\n"))
	f.Add([]byte("cn-hangzhou"))
	f.Add([]byte("<html>captive portal</html>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseMetadataValue(data)
		if err != nil {
			return
		}
		if !idPattern.MatchString(v) || strings.ContainsAny(v, "/\\\n\r\t ?&=%\"'") {
			t.Fatalf("accepted %q", v)
		}
	})
}
