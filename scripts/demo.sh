#!/usr/bin/env bash
# weft demo: three hosts (network namespaces) on one virtual switch, a weft
# daemon in each, and an overlay 10.244.0.0/16 across them.
#
#   sudo make demo            (or: sudo scripts/demo.sh)
#   WEFT=/path/to/weft sudo -E scripts/demo.sh   to use a prebuilt binary
#
# Everything lives in namespaces created here (names end in this shell's PID)
# and is removed on exit, Ctrl-C or failure. No traffic leaves them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NET=10.244.0.0/16
HOSTS=(a b c)
METRICS_PORT=9586
IPERF_PORT=5201

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- preflight --------------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
	die "needs root (it creates network namespaces and TUN devices); run: sudo make demo"
fi
missing=()
for tool in ip ping iperf3; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
	say "demo: missing tools: ${missing[*]}" >&2
	say "  install them with: apt-get install -y iproute2 iputils-ping iperf3" >&2
	exit 1
fi

# --- state and cleanup ------------------------------------------------------
ID="wd$$"                # namespace names: wd<pid>-sw, wd<pid>-a, ... (<= 15 chars)
SW="$ID-sw"
TMP=$(mktemp -d "/tmp/weft-demo.$$.XXXXXX")
PIDS=()                  # every background process we started
NSS=()                   # every namespace we created

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	local pid i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for ((i = 0; i < 50; i++)); do
		local alive=0
		for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
	wait 2>/dev/null
	# Safety net: anything still inside our namespaces was started by us.
	for ((i = ${#NSS[@]} - 1; i >= 0; i--)); do
		for pid in $(ip netns pids "${NSS[i]}" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
	done
	sleep 0.2
	for ((i = ${#NSS[@]} - 1; i >= 0; i--)); do ip netns del "${NSS[i]}" 2>/dev/null; done
	if ((rc != 0)); then
		for h in "${HOSTS[@]}"; do
			[[ -s $TMP/weft-$h.log ]] || continue
			say "---- last lines of weft on $h ($TMP/weft-$h.log) ----" >&2
			tail -n 15 "$TMP/weft-$h.log" >&2
		done
		say "demo: FAILED (exit $rc); logs kept in $TMP" >&2
	else
		rm -rf "$TMP"
		say "cleaned up: namespaces and processes removed."
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ns() { printf '%s-%s' "$ID" "$1"; }
idx() { case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
underlay() { echo "192.168.50.$(idx "$1")"; }
overlay() { echo "10.244.$(idx "$1").0"; }
subnet() { echo "10.244.$(idx "$1").0/24"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# --- build ------------------------------------------------------------------
if [[ -z ${WEFT:-} ]]; then
	GO=$(command -v go || true)
	[[ -n $GO ]] || GO=/usr/local/go/bin/go
	[[ -x $GO ]] || die "go not found (set WEFT=/path/to/weft to use a prebuilt binary)"
	say "building weft ..."
	(cd "$ROOT" && "$GO" build -o bin/weft ./cmd/weft) || die "go build ./cmd/weft failed"
	WEFT=$ROOT/bin/weft
fi
[[ -x $WEFT ]] || die "weft binary $WEFT is not executable"
WEFT=$(cd "$(dirname "$WEFT")" && pwd)/$(basename "$WEFT")

# --- network: switch namespace with a bridge, three hosts ---------------------
NSS+=("$SW")
ip netns add "$SW"
ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$SW" link set br0 up
for h in "${HOSTS[@]}"; do
	NSS+=("$(ns "$h")")
	ip netns add "$(ns "$h")"
	ip -n "$(ns "$h")" link set lo up
	# veth created directly across namespaces: nothing appears in the root ns.
	ip -n "$SW" link add "p-$h" type veth peer name eth0 netns "$(ns "$h")"
	ip -n "$SW" link set "p-$h" master br0 up
	ip -n "$(ns "$h")" addr add "$(underlay "$h")/24" dev eth0
	ip -n "$(ns "$h")" link set eth0 up
done
say "hosts: a=$(underlay a) b=$(underlay b) c=$(underlay c) on bridge br0 (namespace $SW)"

# --- start weft in each host ----------------------------------------------------
for h in "${HOSTS[@]}"; do
	join=()
	for o in "${HOSTS[@]}"; do [[ $o == "$h" ]] || join+=("$(underlay "$o")"); done
	# Not via the in_ns function: "&" on a function would background a
	# subshell and $! would not be weft's PID. "ip netns exec" execs weft.
	ip netns exec "$(ns "$h")" "$WEFT" run --name "$h" --network "$NET" --subnet "$(subnet "$h")" \
		--public-ip "$(underlay "$h")" --join "$(IFS=,; echo "${join[*]}")" \
		--metrics-addr "$(underlay "$h"):$METRICS_PORT" --socket "$TMP/$h.sock" \
		--state-dir "$TMP/$h-state" --subnet-file "$TMP/$h-subnet.env" \
		--log-level info --log-format text >"$TMP/weft-$h.log" 2>&1 &
	PIDS+=($!)
done

# readyz answers 200? (plain bash HTTP, no curl needed)
ready() {
	local h=$1
	in_ns "$h" timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
		head -n 1 <&3 | grep -q " 200"' _ "$(underlay "$h")" "$METRICS_PORT" 2>/dev/null
}
alive_peers() {
	in_ns "$1" "$WEFT" status --socket "$TMP/$1.sock" --json 2>/dev/null | grep -Eo '"state" *: *"alive"' | wc -l
}

say "starting weft on a, b, c; waiting for the cluster to form ..."
start=$SECONDS
for h in "${HOSTS[@]}"; do
	until ready "$h" && (($(alive_peers "$h") >= 2)); do
		for i in "${!PIDS[@]}"; do
			kill -0 "${PIDS[i]}" 2>/dev/null || die "weft on ${HOSTS[i]} exited early"
		done
		((SECONDS - start < 30)) || die "cluster did not form within 30 s"
		sleep 0.2
	done
done
say "cluster formed in $((SECONDS - start)) s"
say ""
say "== weft status on a =="
in_ns a "$WEFT" status --socket "$TMP/a.sock"
say ""

# --- ping every pair over the overlay -----------------------------------------
say "== overlay ping (3 pings, avg RTT) =="
for s in "${HOSTS[@]}"; do
	for d in "${HOSTS[@]}"; do
		[[ $s != "$d" ]] || continue
		out=$(in_ns "$s" ping -n -c 3 -i 0.2 -W 1 "$(overlay "$d")" 2>&1 || true)
		recv=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
		avg=$(awk -F/ '/^rtt|^round-trip/ {print $5}' <<<"$out")
		if [[ ${recv:-0} -gt 0 ]]; then
			printf '  %s -> %s  %-11s %s/3 replies  avg %s ms\n' "$s" "$d" "$(overlay "$d")" "$recv" "$avg"
		else
			printf '  %s -> %s  %-11s NO REPLY\n' "$s" "$d" "$(overlay "$d")"
			fail=1
		fi
	done
done
[[ -z ${fail:-} ]] || die "some overlay pings got no reply"
say ""

# --- iperf3 TCP a -> b -----------------------------------------------------------
say "== iperf3 TCP a -> b over the overlay (5 s) =="
ip netns exec "$(ns b)" iperf3 -s -p "$IPERF_PORT" >"$TMP/iperf3-server.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 50; i++)); do
	in_ns b ss -Hltn "sport = :$IPERF_PORT" | grep -q LISTEN && break
	sleep 0.1
done
out=$(in_ns a iperf3 -c "$(overlay b)" -p "$IPERF_PORT" -t 5 -f m --connect-timeout 5000 2>&1) ||
	die "iperf3 failed: $out"
rate=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1)}' <<<"$out" | tail -n 1)
retr=$(awk '/sender/ {print $(NF - 1)}' <<<"$out" | tail -n 1)
say "  a -> b: ${rate:-?} Mbit/s (receiver), ${retr:-?} retransmits"
say ""
