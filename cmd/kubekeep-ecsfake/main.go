// Command kubekeep-ecsfake serves the in-memory ECS API and metadata service
// of cloudsnap/ecsfake on a local port, for `make demo` and scripts that
// drive `kubekeep cloud` without an Alibaba Cloud account.
//
// It accepts requests signed with the key pair given by --access-key-id and
// --access-key-secret (fake values: no real credential belongs here) and
// describes one instance whose disks are listed by --disk.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
)

type diskList []ecsfake.DiskSpec

func (d *diskList) String() string { return fmt.Sprint(len(*d), " disks") }

// Set parses ID:TYPE:CATEGORY[:SIZE_GIB], e.g. d-sys:system:cloud_essd:40.
func (d *diskList) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 3 || len(parts) > 4 || parts[0] == "" || (parts[1] != "system" && parts[1] != "data") || parts[2] == "" {
		return fmt.Errorf("want ID:system|data:CATEGORY[:SIZE_GIB], got %q", v)
	}
	spec := ecsfake.DiskSpec{ID: parts[0], Type: parts[1], Category: parts[2]}
	if len(parts) == 4 {
		n, err := strconv.Atoi(parts[3])
		if err != nil || n <= 0 {
			return fmt.Errorf("disk size %q is not a positive number of GiB", parts[3])
		}
		spec.SizeGiB = n
	}
	*d = append(*d, spec)
	return nil
}

func main() {
	var (
		listen     = flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free one)")
		addrFile   = flag.String("addr-file", "", "write the URL served (http://host:port) to this file once listening")
		region     = flag.String("region", "cn-hangzhou", "region the fake serves")
		instanceID = flag.String("instance-id", "i-kubekeepdemo0001", "the instance the metadata service describes")
		keyID      = flag.String("access-key-id", "LTAIkubekeepdemo", "access key id the fake accepts")
		keySecret  = flag.String("access-key-secret", "kubekeep-demo-secret", "access key secret the fake accepts")
		snapDur    = flag.Duration("snapshot-duration", 3*time.Second, "how long a snapshot stays progressing")
		stateDur   = flag.Duration("instance-transition", 2*time.Second, "how long an instance stays Stopping or Starting")
		disks      diskList
	)
	flag.Var(&disks, "disk", "ID:system|data:CATEGORY[:SIZE_GIB] (repeatable; default a system and a data ESSD)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("kubekeep-ecsfake: ")

	if len(disks) == 0 {
		disks = diskList{
			{ID: "d-kubekeepsystem", Type: "system", Category: "cloud_essd", SizeGiB: 40},
			{ID: "d-kubekeepdata01", Type: "data", Category: "cloud_essd", SizeGiB: 100},
		}
	}
	fake := ecsfake.New(ecsfake.Options{Region: *region, SnapshotDuration: *snapDur, StopDuration: *stateDur, StartDuration: *stateDur})
	fake.AddAccessKey(*keyID, *keySecret)
	fake.AddInstance(ecsfake.InstanceSpec{ID: *instanceID, Name: "kubekeep-demo-master"})
	for i, d := range disks {
		d.InstanceID = *instanceID
		d.Device = fmt.Sprintf("/dev/vd%c", 'a'+i)
		d.Content = d.ID + "@start"
		fake.AddDisk(d)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving ECS %s and instance metadata for %s at %s", *region, *instanceID, url)

	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
