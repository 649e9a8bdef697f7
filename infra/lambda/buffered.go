package lambda

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/awslabs/aws-lambda-go-api-proxy/httpadapter"
)

// HTTPAPI returns a Lambda handler that serves API Gateway HTTP API events
// (payload format 2.0) with h, through aws-lambda-go-api-proxy's buffered
// adapter: the client gets the response when h returns, so streamed
// answers arrive all at once and must fit Lambda's 6 MB response limit and
// the API's 30-second integration timeout. Use [FunctionURL] to stream.
//
// Request conversion is api-proxy's: cookies become a Cookie header, and
// header values are split at commas except for a fixed list of singleton
// headers. The request's context ends shortly before the invocation
// deadline (see [BeforeDeadline]).
//
// Unlike the bare adapter, a handler that returns without writing answers
// 200, [http.NewResponseController] Flush succeeds (as a no-op), and a
// panic does not crash the process: it answers 500 {"error":"internal
// error"}, or 502 {"error":"response aborted"} for [http.ErrAbortHandler],
// since a cut response must not look complete. The returned function is
// safe for concurrent use.
func HTTPAPI(h http.Handler) func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	a := httpadapter.NewV2(buffered(h))
	return func(ctx context.Context, e events.APIGatewayV2HTTPRequest) (resp events.APIGatewayV2HTTPResponse, err error) {
		defer func() {
			if p := recover(); p != nil {
				code, body := panicResponse(e.RequestContext.HTTP.Method, e.RawPath, p)
				resp, err = events.APIGatewayV2HTTPResponse{
					StatusCode: code,
					Headers:    map[string]string{"Content-Type": "application/json"},
					Body:       body,
				}, nil
			}
		}()
		ctx, cancel := BeforeDeadline(ctx)
		defer cancel()
		return a.ProxyWithContext(ctx, e)
	}
}

// ALB returns a Lambda handler that serves Application Load Balancer events
// with h, through aws-lambda-go-api-proxy's buffered adapter. It behaves as
// [HTTPAPI] does (buffering, 200 by default, panics answered with 500 or
// 502). Headers answer in the shape the request came in: MultiValueHeaders
// when the target group has multi-value headers on (recommended), else
// Headers, with values joined by commas and only the first Set-Cookie.
//
// What api-proxy leaves out is completed: ALB passes the query as the
// client encoded it (api-proxy would encode it twice), no peer address
// (the client ALB saw, the last X-Forwarded-For entry, becomes
// RemoteAddr), and with multi-value headers no host for the URL. The
// returned function is safe for concurrent use.
func ALB(h http.Handler) func(context.Context, events.ALBTargetGroupRequest) (events.ALBTargetGroupResponse, error) {
	a := httpadapter.NewALB(fromALB(buffered(h)))
	return func(ctx context.Context, e events.ALBTargetGroupRequest) (resp events.ALBTargetGroupResponse, err error) {
		defer func() {
			if p := recover(); p != nil {
				code, body := panicResponse(e.HTTPMethod, e.Path, p)
				resp, err = events.ALBTargetGroupResponse{
					StatusCode:        code,
					StatusDescription: http.StatusText(code),
					Headers:           map[string]string{"Content-Type": "application/json"},
					Body:              body,
				}, nil
				if len(e.MultiValueHeaders) > 0 {
					resp.Headers = nil
					resp.MultiValueHeaders = map[string][]string{"Content-Type": {"application/json"}}
				}
			}
		}()
		ctx, cancel := BeforeDeadline(ctx)
		defer cancel()
		resp, err = a.ProxyWithContext(ctx, decodedQuery(e))
		if len(e.MultiValueHeaders) == 0 && len(resp.MultiValueHeaders) > 0 {
			resp.Headers = singleValue(resp.MultiValueHeaders)
			resp.MultiValueHeaders = nil
		}
		return resp, err
	}
}

// decodedQuery returns e with its query parameters decoded: ALB passes them
// as the client encoded them, and api-proxy encodes what it is given.
func decodedQuery(e events.ALBTargetGroupRequest) events.ALBTargetGroupRequest {
	unescape := func(s string) string {
		if u, err := url.QueryUnescape(s); err == nil {
			return u
		}
		return s
	}
	if len(e.QueryStringParameters) > 0 {
		q := make(map[string]string, len(e.QueryStringParameters))
		for k, v := range e.QueryStringParameters {
			q[unescape(k)] = unescape(v)
		}
		e.QueryStringParameters = q
	}
	if len(e.MultiValueQueryStringParameters) > 0 {
		q := make(map[string][]string, len(e.MultiValueQueryStringParameters))
		for k, vs := range e.MultiValueQueryStringParameters {
			for _, v := range vs {
				q[unescape(k)] = append(q[unescape(k)], unescape(v))
			}
		}
		e.MultiValueQueryStringParameters = q
	}
	return e
}

// fromALB completes the request api-proxy built from an ALB event, as a
// server would have: Host out of the headers and into r.Host, and the peer
// the client ALB saw, which ALB appends to X-Forwarded-For (the entries
// before it are what the client claimed, and stay in the header).
func fromALB(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" {
			r.Host = r.Header.Get("Host")
			r.URL.Host = r.Host
		}
		r.Header.Del("Host")
		if r.RemoteAddr == "" {
			hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
			if ip, err := netip.ParseAddr(strings.TrimSpace(hops[len(hops)-1])); err == nil {
				r.RemoteAddr = netip.AddrPortFrom(ip, 0).String()
				if rest := strings.TrimSpace(strings.Join(hops[:len(hops)-1], ",")); rest != "" {
					r.Header.Set("X-Forwarded-For", rest)
				} else {
					r.Header.Del("X-Forwarded-For")
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// singleValue converts headers for a target group without multi-value
// headers, whose responses carry one value per name: values are joined
// with commas, except Set-Cookie, which keeps its first.
func singleValue(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch {
		case len(v) == 0:
		case http.CanonicalHeaderKey(k) == "Set-Cookie":
			out[k] = v[0]
		default:
			out[k] = strings.Join(v, ",")
		}
	}
	return out
}

func panicResponse(method, path string, p any) (int, string) {
	logPanic(method, path, p, false)
	if p == http.ErrAbortHandler {
		return http.StatusBadGateway, `{"error":"response aborted"}` + "\n"
	}
	return http.StatusInternalServerError, internalErrorBody
}

// buffered makes api-proxy's buffering writers behave like a server's: a
// handler that writes nothing answers 200 (api-proxy would answer 504 and
// fail the invocation), the first status wins, and Flush exists as a no-op.
func buffered(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bw := &bufferedWriter{ResponseWriter: w}
		h.ServeHTTP(bw, r)
		if !bw.wrote {
			bw.WriteHeader(http.StatusOK)
		}
	})
}

type bufferedWriter struct {
	http.ResponseWriter
	wrote bool
}

// WriteHeader keeps the first final status, as a server does (api-proxy's
// writers keep the last), and ignores informational ones.
func (w *bufferedWriter) WriteHeader(code int) {
	if w.wrote || (code >= 100 && code < 200) {
		return
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *bufferedWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush does nothing: the response goes out when the handler returns.
func (w *bufferedWriter) Flush() {}

func (w *bufferedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
