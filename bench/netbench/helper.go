package main

import (
	"context"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// httpGetWithin performs a GET of url from inside host h (netlab re-executes
// this binary in the host's namespace, so no thread of this process ever
// moves into a namespace), allowing it timeout.
func httpGetWithin(ctx context.Context, h *netlab.Host, url string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return h.HTTPGet(ctx, url)
}
