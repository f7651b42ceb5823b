// Package examples holds no code: it is the directory of files an operator
// copies, and its tests check them.
//
//   - kubeadm.yaml: every configuration setting with its default;
//   - kubekeep.service: the hardened systemd unit `make install` puts in place;
//   - prometheus.yml, prometheus-rules.yaml: a Prometheus scrape job for the
//     agent (honor_labels: true, the agent's series carry their own "job"
//     label) and the README's suggested alerts, with unit tests in
//     prometheus-rules.test.yaml;
//   - grafana-dashboard.json: a dashboard of the newest verified backup's
//     age, the etcd delta lag, job failures, the second disk's space and the
//     ECS and off-site tiers.
//
// The tests run Debian's promtool (`make deps` installs it): `promtool check
// rules` and `promtool test rules` on the rules, and `promtool check rules`
// on every dashboard query written out as a recording rule. They start a
// real agent (an embedded etcd, a restore drill, an ECS snapshot hook, one
// off-site tier on a real S3 server and one that is down), check that every
// metric the rules and the dashboard name is one it exports, then run the
// real Prometheus with prometheus.yml against it: every rule evaluates
// without error, every series an alert selects and every dashboard query
// returns data, and the one alert active is the down tier's lag.
package examples
