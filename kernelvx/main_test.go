package kernelvx

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// sendEnv makes the test binary, re-executed in a namespace of the
// real-kernel test, send one UDP datagram instead of running tests: its
// value is "ADDR:PORT HEXPAYLOAD".
const sendEnv = "KERNELVX_TEST_SEND"

func TestMain(m *testing.M) {
	if spec := os.Getenv(sendEnv); spec != "" {
		os.Exit(sendDatagram(spec))
	}
	goleak.VerifyTestMain(m)
}

func sendDatagram(spec string) int {
	var dst, payload string
	if _, err := fmt.Sscan(spec, &dst, &payload); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", sendEnv, spec, err)
		return 2
	}
	b, err := hex.DecodeString(payload)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s payload: %v\n", sendEnv, err)
		return 2
	}
	c, err := net.Dial("udp", dst)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
