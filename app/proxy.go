package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/aivonx/aivonx/app/fleet"
)

// route describes one proxied route: where it goes on the node and which
// error shape it speaks.
type route struct {
	upstream string // path on the node, e.g. "/api/chat"
	dialect  dialect
}

// modelFields are the request-body fields routing needs. Some clients send
// the deprecated "name" instead of "model" (the ollama CLI on /api/show and
// /api/pull, ollama-js on /api/pull, /api/push, /api/delete).
type modelFields struct {
	Model string `json:"model"`
	Name  string `json:"name"`
}

// parseModel reads the model a request body names. It returns a
// *fleet.ValidationError for a body that is not a JSON object or names no
// model as a string.
func parseModel(body []byte) (string, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", &fleet.ValidationError{Field: "body", Msg: "missing request body"}
	}
	var f modelFields
	if err := json.Unmarshal(body, &f); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return "", &fleet.ValidationError{Field: typeErr.Field, Msg: "must be a string"}
		}
		if errors.As(err, &typeErr) {
			return "", &fleet.ValidationError{Field: "body", Msg: "must be a JSON object"}
		}
		return "", &fleet.ValidationError{Field: "body", Msg: "invalid JSON: " + err.Error()}
	}
	model := strings.TrimSpace(f.Model)
	if model == "" {
		model = strings.TrimSpace(f.Name)
	}
	if model == "" {
		return "", &fleet.ValidationError{Field: "model", Msg: "model is required"}
	}
	return model, nil
}

// readBody reads the whole request body, bounded by the configured limit, so
// it can be parsed for the model and replayed to a second node.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	limit := h.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", limit)
	}
	var (
		body []byte
		err  error
	)
	rd := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is larger than %d bytes", limit)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("read request body: %w", err)
	}
	return body, 0, nil
}

// proxy returns the handler of a model-routed route.
func (h *Handler) proxy(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a := accessFrom(r.Context())
		body, status, err := h.readBody(w, r)
		if err != nil {
			writeError(w, rt.dialect, status, err.Error())
			return
		}
		model, err := parseModel(body)
		if err != nil {
			var invalid *fleet.ValidationError
			errors.As(err, &invalid)
			writeError(w, rt.dialect, http.StatusBadRequest, invalid.Msg)
			return
		}
		a.model = model
		v := h.view.get(r.Context(), h.now())
		cands, err := v.snap.Candidates(model, h.routing())
		if err != nil {
			writeErr(w, r, rt.dialect, err)
			return
		}
		h.forward(w, r, rt, v, body, v.settings.Strategy.Narrow(cands))
	}
}

// forward sends the request to the least loaded candidate and relays the
// answer. A candidate that cannot be reached, or is busy, before anything
// was sent to the client is dropped and the next one is tried.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, rt route, v *view, body []byte, cands []fleet.Candidate) {
	ctx := r.Context()
	a := accessFrom(ctx)
	ids := make([]int64, len(cands))
	for i, c := range cands {
		ids[i] = c.Node.ID
	}
	var lastErr error
	for len(cands) > 0 {
		i, release, err := h.inflight.Acquire(ctx, ids)
		if err != nil {
			writeErr(w, r, rt.dialect, err)
			return
		}
		node := cands[i].Node
		resp, err := h.send(ctx, r, rt, v.urls[node.ID], body)
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable && len(cands) > 1 {
			// Busy (Ollama's queue is full): skip this node for this
			// request only; it is not unhealthy.
			drain(resp.Body)
			err = errBusy
		}
		if err != nil {
			release()
			if ctx.Err() != nil {
				return // the client went away; nobody to answer
			}
			if errors.Is(err, errFirstByteTimeout) {
				a.node = node.Name
				writeError(w, rt.dialect, http.StatusGatewayTimeout, fmt.Sprintf("node %s sent no response within %s", node.Name, h.cfg.FirstByteTimeout))
				return
			}
			if !errors.Is(err, errBusy) {
				h.markUnreachable(ctx, node, err)
			}
			lastErr = err
			a.retries++
			cands = append(cands[:i:i], cands[i+1:]...)
			ids = append(ids[:i:i], ids[i+1:]...)
			continue
		}
		a.node = node.Name
		h.relay(w, r, rt, node, resp)
		release()
		return
	}
	if a.retries > 0 {
		a.retries-- // the last attempt was not a retry
	}
	a.err = lastErr
	writeError(w, rt.dialect, http.StatusBadGateway, "no node could serve the request: "+shortReason(lastErr))
}

var (
	errBusy             = errors.New("node busy")
	errFirstByteTimeout = errors.New("node sent no response headers in time")
)

// hopHeaders are never forwarded (RFC 9110 §7.6.1), and credentials meant
// for the proxy never reach a node.
var skipRequestHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Authorization": true, "Cookie": true, "X-Api-Key": true, "Host": true, "Content-Length": true,
}

var skipResponseHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Set-Cookie": true,
}

// send forwards one attempt. The Host header becomes the node's (a loopback
// Ollama answers 403 to a foreign Host).
func (h *Handler) send(ctx context.Context, r *http.Request, rt route, base *url.URL, body []byte) (*http.Response, error) {
	if base == nil {
		return nil, errors.New("node has no valid URL")
	}
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, Path: rt.upstream, RawQuery: r.URL.RawQuery}
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out.Header = make(http.Header, len(r.Header)+2)
	copyHeaders(out.Header, r.Header, skipRequestHeaders)
	if ip := clientIP(r); ip != "" {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if r.TLS != nil {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	resp, err := h.transport.RoundTrip(out)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !isDialError(err) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: %w", errFirstByteTimeout, err)
		}
		return nil, err
	}
	return resp, nil
}

// copyHeaders copies src into dst, leaving out the skipped headers and any
// header that src's Connection header names (RFC 9110 §7.6.1).
func copyHeaders(dst, src http.Header, skip map[string]bool) {
	conn := src["Connection"]
	for k, vs := range src {
		if skip[k] || namedIn(conn, k) {
			continue
		}
		dst[k] = vs
	}
}

func namedIn(connection []string, header string) bool {
	for _, v := range connection {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), header) {
				return true
			}
		}
	}
	return false
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}
