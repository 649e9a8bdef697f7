// Package lambda runs an [http.Handler] as an AWS Lambda function.
//
// [FunctionURL] is the streaming front: a Lambda Function URL with
// InvokeMode RESPONSE_STREAM. Every Write of the handler reaches the
// runtime, and from there the client, as it happens; the response writer
// implements [http.Flusher] (and so [http.NewResponseController]), keeps
// request cookies and Set-Cookie, and turns a panic in the handler into a
// 500 before the response starts or into a stream that ends with an error
// (the runtime's error trailers) after it started. The process survives
// either way. aws-lambda-go's own lambdaurl package does none of these.
//
// [HTTPAPI] and [ALB] are buffered fronts for deployments that do not need
// streaming (API Gateway HTTP API, Application Load Balancer): the whole
// response is collected and returned at once, within Lambda's 6 MB limit.
//
// Lambda does not cancel an invocation when the client goes away: a
// request's context ends only at the invocation deadline, which the runtime
// puts on the context passed to these functions and which they pass on to
// [http.Request.Context]. Handlers must bound their work by that context
// and by explicit limits.
//
// The handler must not keep background work between invocations: Lambda
// freezes the process as soon as the response ends.
package lambda

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

type requestKey struct{}

// RequestFromContext returns the Function URL event of the request whose
// context is ctx (for the IAM authorizer's caller, say), if the request came
// through [FunctionURL].
func RequestFromContext(ctx context.Context) (*events.LambdaFunctionURLRequest, bool) {
	e, ok := ctx.Value(requestKey{}).(*events.LambdaFunctionURLRequest)
	return e, ok
}

// FunctionURL returns a Lambda handler that serves Function URL events with
// h and streams its response. Start it with
// lambda.StartHandlerFunc(FunctionURL(h)) in a binary built with
// -tags lambda.norpc; the Function URL must have InvokeMode RESPONSE_STREAM
// (a BUFFERED URL would send the stream's prelude to the client).
//
// The request's context ends shortly before the invocation deadline (see
// [BeforeDeadline]). The
// response's status and headers go out at the first WriteHeader, Write or
// Flush (or when h returns); multi-value headers are joined with commas,
// Set-Cookie becomes the response's cookies, as Function URLs require, and
// connection headers (Connection, Transfer-Encoding, ...) and trailers are
// dropped. Writes are unbuffered and block until the runtime has read them.
// A Content-Type is sniffed, as net/http does, only when the first Write
// comes before any WriteHeader and h set none.
//
// If h panics before its response started, the client gets a 500 with
// {"error":"internal error"}; after, the stream is closed with an error,
// so that the runtime reports it in its error trailers and the client sees
// a failed stream, not a short one that looks complete. Panics are logged
// with [slog.Default], except [http.ErrAbortHandler], which h uses on
// purpose to cut a response. The returned error is non-nil only for an
// event that cannot become a request.
//
// The returned function is safe for concurrent use.
func FunctionURL(h http.Handler) func(context.Context, *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
	return func(ctx context.Context, e *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
		ctx, cancel := BeforeDeadline(ctx)
		r, err := functionURLRequest(ctx, e)
		if err != nil {
			cancel()
			return nil, err
		}
		pr, pw := io.Pipe()
		ready := make(chan *events.LambdaFunctionURLStreamingResponse, 1)
		w := &streamWriter{pw: pw, ready: ready}
		go func() {
			defer cancel()
			w.serve(h, r)
		}()
		resp := <-ready
		resp.Body = pr
		return resp, nil
	}
}

func functionURLRequest(ctx context.Context, e *events.LambdaFunctionURLRequest) (*http.Request, error) {
	if e == nil {
		return nil, errors.New("function url: nil event")
	}
	body := []byte(e.Body)
	if e.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(e.Body)
		if err != nil {
			return nil, fmt.Errorf("function url: decode base64 body: %w", err)
		}
		body = b
	}
	requestURI := cmp.Or(e.RawPath, e.RequestContext.HTTP.Path, "/")
	if e.RawQueryString != "" {
		requestURI += "?" + e.RawQueryString
	}
	// Like a server's request: the URL holds the path and query only, with
	// the path's escaping kept; the host is in r.Host.
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return nil, fmt.Errorf("function url: path %q: %w", requestURI, err)
	}
	method := cmp.Or(e.RequestContext.HTTP.Method, http.MethodGet)
	ctx = context.WithValue(ctx, requestKey{}, e)
	r, err := http.NewRequestWithContext(ctx, method, "/", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("function url: %w", err)
	}
	r.URL = u // parsed as a server does: "//x" is a path, not a host
	r.RequestURI = requestURI
	if p := e.RequestContext.HTTP.Protocol; p != "" {
		if major, minor, ok := http.ParseHTTPVersion(p); ok {
			r.Proto, r.ProtoMajor, r.ProtoMinor = p, major, minor
		}
	}
	for k, v := range e.Headers {
		r.Header.Add(k, v)
	}
	r.Host = cmp.Or(r.Header.Get("Host"), e.RequestContext.DomainName)
	r.Header.Del("Host") // as net/http's server does
	// Function URLs move cookies into a list, and may or may not keep the
	// Cookie header too.
	if len(e.Cookies) > 0 {
		r.Header.Set("Cookie", mergeCookies(r.Header.Get("Cookie"), e.Cookies))
	}
	r.RemoteAddr = e.RequestContext.HTTP.SourceIP
	// Function URLs answer on HTTPS only; the client's TLS ended at AWS.
	r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	return r, nil
}

// mergeCookies returns the Cookie header value with the cookies that
// header does not already hold appended.
func mergeCookies(header string, cookies []string) string {
	have := map[string]bool{}
	var all []string
	for c := range strings.SplitSeq(header, ";") {
		if c = strings.TrimSpace(c); c != "" && !have[c] {
			have[c] = true
			all = append(all, c)
		}
	}
	for _, c := range cookies {
		if c = strings.TrimSpace(c); c != "" && !have[c] {
			have[c] = true
			all = append(all, c)
		}
	}
	return strings.Join(all, "; ")
}

// streamWriter is the http.ResponseWriter of one invocation. The prelude
// (status, headers, cookies) goes to the runtime through ready exactly once;
// the body goes through the pipe.
type streamWriter struct {
	header http.Header
	pw     *io.PipeWriter
	ready  chan<- *events.LambdaFunctionURLStreamingResponse
	once   sync.Once
	sent   atomic.Bool
	err    atomic.Pointer[error] // first write error, for FlushError
}

func (w *streamWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

// WriteHeader sends the status and a copy of the headers; calls after the
// first are ignored, as are informational (1xx) statuses, which a Function
// URL cannot send.
func (w *streamWriter) WriteHeader(code int) {
	if code < 200 || code > 999 {
		if code >= 100 && code < 200 {
			return
		}
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	w.send(code, w.header)
}

// Write sends the status 200 first if no status went out, then p.
func (w *streamWriter) Write(p []byte) (int, error) {
	if !w.sent.Load() {
		if _, ok := w.Header()["Content-Type"]; !ok && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.send(http.StatusOK, w.header)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := w.pw.Write(p)
	if err != nil {
		w.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// Flush sends the status 200 if no status went out. Writes are not
// buffered, so there is nothing else to flush.
func (w *streamWriter) Flush() { w.send(http.StatusOK, w.header) }

// FlushError is Flush for [http.ResponseController]; it reports the first
// write error (the runtime stopped reading).
func (w *streamWriter) FlushError() error {
	w.Flush()
	if err := w.err.Load(); err != nil {
		return *err
	}
	return nil
}

func (w *streamWriter) send(code int, h http.Header) {
	w.once.Do(func() {
		resp := &events.LambdaFunctionURLStreamingResponse{StatusCode: code}
		for k, v := range h {
			if len(v) == 0 || connectionHeaders[k] || strings.HasPrefix(k, http.TrailerPrefix) {
				continue
			}
			if k == "Set-Cookie" {
				resp.Cookies = append([]string(nil), v...)
				continue
			}
			if resp.Headers == nil {
				resp.Headers = make(map[string]string, len(h))
			}
			resp.Headers[k] = strings.Join(v, ",")
		}
		w.sent.Store(true)
		w.ready <- resp
	})
}

// connectionHeaders belong to a connection, which the Function URL owns (a
// server drops them too); trailers cannot be sent at all.
var connectionHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Upgrade": true, "Te": true, "Trailer": true,
}

// serve runs h and ends the stream: cleanly when h returns, with an error
// when it panics after the response started.
func (w *streamWriter) serve(h http.Handler, r *http.Request) {
	defer func() {
		p := recover()
		if p == nil {
			w.send(http.StatusOK, w.header)
			w.pw.Close()
			return
		}
		logPanic(r.Method, r.URL.Path, p, w.sent.Load())
		if !w.sent.Load() {
			// Nothing went out: answer like a server would, and drop the
			// headers h had prepared for a response it did not give.
			w.send(http.StatusInternalServerError, http.Header{"Content-Type": {"application/json"}})
			w.pw.Write([]byte(internalErrorBody))
			w.pw.Close()
			return
		}
		w.pw.CloseWithError(fmt.Errorf("handler panic: %v", p))
	}()
	h.ServeHTTP(w, r)
}

const internalErrorBody = `{"error":"internal error"}` + "\n"

func logPanic(method, path string, p any, started bool) {
	log := slog.Default()
	attrs := []any{"method", method, "path", path, "response_started", started}
	if p == http.ErrAbortHandler {
		log.Warn("lambda: handler aborted the response", attrs...)
		return
	}
	log.Error("lambda: panic serving request", append(attrs, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))...)
}

// BeforeDeadline returns ctx ending a little before its deadline (an
// invocation's): a tenth of the time left, at most two seconds. Lambda
// stops the process at the deadline, which would cut a stream in the
// middle without a word; a handler whose context ends first can still end
// its response with an error its client sees (the proxy's relay does).
func BeforeDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(2*time.Second, time.Until(deadline)/10)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}
