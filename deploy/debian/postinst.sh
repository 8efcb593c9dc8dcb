#!/bin/sh
# weft postinst: make systemd see the new or changed unit. The service is
# neither enabled nor started: edit /etc/weft/weft.yaml and install the
# cluster's gossip key first (one key for every host, made once with
# `weft keygen`, copied to /etc/weft/gossip.key, mode 0600), then
#   systemctl enable --now weft
# No key is generated here: a key made per host would silently keep the hosts
# apart; until the key is installed, the unit's `weft run --check` says so.
# After an upgrade, a running daemon keeps the old binary until
#   systemctl restart weft
set -e

case "$1" in
configure | abort-upgrade | abort-remove | abort-deconfigure)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload || true
	fi
	;;
esac

exit 0
