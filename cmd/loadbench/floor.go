package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"time"
)

// floorName is the baseline a Go proxy cannot go below: net/http's server
// and httputil.ReverseProxy with nothing on top (no routing, auth, leases,
// history, metrics or logs). What Aivonx costs beyond it is Aivonx's own;
// what nginx costs below it is net/http's.
const floorName = "Go floor (net/http ReverseProxy)"

// floorFlag makes loadbench itself the floor proxy, in front of one node,
// so that it runs as its own process and its CPU time is its own.
const floorFlag = "-serve-floor-proxy"

// serveFloor runs the floor proxy in front of node, printing the address
// it listens on as fakeollama does.
func serveFloor(node string) error {
	u, err := url.Parse(node)
	if err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // every chunk at once, as a stream needs
	// A measurement ends by cutting its last requests; the others say
	// nothing of that either.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.Transport = &http.Transport{
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	// The body is read whole first, as Aivonx reads it for the model:
	// streamed from the client, the Transport reads it once more after its
	// declared length, which fails once the server has answered, and the
	// Transport then cuts the response (golang/go#40747: about 1.5% of requests here).
	whole := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: whole, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// startFloor starts this program as the floor proxy in front of node.
func startFloor(node string) (*exec.Cmd, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	return startAndWait(exec.Command(self, floorFlag, node), "listening on ")
}
