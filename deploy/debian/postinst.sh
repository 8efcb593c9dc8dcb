#!/bin/sh
# weft postinst: make systemd see the new or changed unit. The service is
# neither enabled nor started: edit /etc/weft/weft.yaml first, then
#   systemctl enable --now weft
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
