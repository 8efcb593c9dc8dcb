#!/bin/sh
# weft postrm: forget the removed unit; on purge also drop the state
# (leased subnet, gossip state). dpkg removes /etc/weft/weft.yaml on purge.
set -e

case "$1" in
remove | purge)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload || true
	fi
	;;
esac

if [ "$1" = purge ]; then
	rm -rf /var/lib/weft
fi

exit 0
