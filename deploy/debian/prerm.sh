#!/bin/sh
# weft prerm: on removal (not on upgrade), stop and disable the service while
# its binary is still there, so ExecStopPost can remove the TUN device and
# routes.
set -e

case "$1" in
remove | deconfigure)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl stop weft.service || true
		systemctl disable weft.service >/dev/null 2>&1 || true
	fi
	;;
esac

exit 0
