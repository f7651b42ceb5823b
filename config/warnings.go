package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// Warnings returns the settings that are valid but risky, positioned like
// Validate's errors (name and top as there; top may be nil). They never
// stop kubekeep: `kubekeep config validate` prints them and the agent logs
// them when it starts and on every reload.
//
//   - metrics.listen on an address other than loopback: /metrics and
//     /healthz say which jobs fail and why, the store's path and fill, the
//     etcd revision and how old the newest good backup is, to anyone who
//     can reach the port;
//   - cloud.endpoint over plain http to another host: every ECS request
//     carries the access key id and, with a RAM role or STS, the security
//     token in its query string, readable on the way.
func (c *Config) Warnings(name string, top *yaml.Node) Errors {
	var ws Errors
	warn := func(key, format string, args ...any) {
		w := &Error{File: name, Key: key, Msg: fmt.Sprintf(format, args...), Warning: true}
		if top != nil {
			w.Line = lineOf(top, key)
		}
		ws = append(ws, w)
	}
	if l := c.Metrics.Listen; l != "" {
		if host, port, err := net.SplitHostPort(l); err == nil && !loopbackHost(host) {
			where := "every interface"
			if host != "" && host != "0.0.0.0" && host != "::" {
				where = host + ", not loopback"
			}
			warn("metrics.listen", "%q listens on %s: /metrics and /healthz tell anyone who can reach port %s "+
				"which backups fail and why, where the store is and how old the newest good backup is; "+
				"use 127.0.0.1:%s (a Prometheus on this host, or an SSH tunnel) or firewall the port", l, where, port, port)
		}
	}
	if u, err := url.Parse(c.Cloud.Endpoint); c.Cloud.Endpoint != "" && err == nil && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		warn("cloud.endpoint", "%q is plain http: every ECS request carries the access key id (and the STS token of a RAM role) "+
			"in its query string, readable on the way; use https://", c.Cloud.Endpoint)
	}
	return ws.sorted()
}

// loopbackHost reports whether host (no port) only ever means this machine.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
