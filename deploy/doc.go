// Package deploy holds weft's deployment files: the systemd unit, the example
// configuration, the Prometheus scrape example, the Grafana dashboard and the
// Debian package definition. It has no Go code; deploy_test.go checks the
// files with the tools that consume them (systemd-analyze, promtool, make,
// dpkg-deb). See README.md.
package deploy
