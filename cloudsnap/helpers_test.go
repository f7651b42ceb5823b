package cloudsnap

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
)

const (
	testKeyID     = "LTAI5tFakeKeyForTests"
	testKeySecret = "fake-secret-for-tests"
	testInstance  = "i-bp1kubekeepmaster"
)

var testStart = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

type env struct {
	fake  *ecsfake.Server
	srv   *httptest.Server
	clock *ecsfake.ManualClock
}

// newEnv starts a fake ECS with one instance and two disks (ESSD for
// snapshot groups, or cloud_efficiency for per-disk snapshots) and puts
// valid credentials in the environment the SDK reads them from.
func newEnv(t *testing.T, category string) *env {
	t.Helper()
	clock := ecsfake.NewManualClock(testStart)
	fake := ecsfake.New(ecsfake.Options{Region: "cn-hangzhou", Clock: clock})
	fake.AddAccessKey(testKeyID, testKeySecret)
	fake.AddInstance(ecsfake.InstanceSpec{ID: testInstance, Name: "master"})
	fake.AddDisk(ecsfake.DiskSpec{ID: "d-system0001", InstanceID: testInstance, Type: "system", Category: category, Device: "/dev/xvda", Content: "sys-v1"})
	fake.AddDisk(ecsfake.DiskSpec{ID: "d-data000002", InstanceID: testInstance, Type: "data", Category: category, Device: "/dev/xvdb", Content: "data-v1"})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", testKeyID)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", testKeySecret)
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA", "")
	return &env{fake: fake, srv: srv, clock: clock}
}

func (e *env) options() Options {
	return Options{
		Endpoint:    e.srv.URL,
		MetadataURL: e.srv.URL,
		Cluster:     "prod",
		Clock:       e.clock,
		Retry:       RetryPolicy{Attempts: 6, Base: time.Second, Max: 8 * time.Second},
	}
}

func (e *env) client(t *testing.T, mutate ...func(*Options)) *Client {
	t.Helper()
	o := e.options()
	for _, m := range mutate {
		m(&o)
	}
	c, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func newServer(t *testing.T, fake *ecsfake.Server) string {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return srv.URL
}
