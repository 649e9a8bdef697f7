package lambda

import (
	"context"
	"net/http"
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
// headers. The request's context is ctx with its invocation deadline.
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
		return a.ProxyWithContext(ctx, e)
	}
}

// ALB returns a Lambda handler that serves Application Load Balancer events
// with h, through aws-lambda-go-api-proxy's buffered adapter. It behaves as
// [HTTPAPI] does (buffering, 200 by default, panics answered with 500 or
// 502). Headers answer in the shape the request came in: MultiValueHeaders
// when the target group has multi-value headers on (recommended), else
// Headers, with values joined by commas and only the first Set-Cookie. The
// returned function is safe for concurrent use.
func ALB(h http.Handler) func(context.Context, events.ALBTargetGroupRequest) (events.ALBTargetGroupResponse, error) {
	a := httpadapter.NewALB(buffered(h))
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
		resp, err = a.ProxyWithContext(ctx, e)
		if len(e.MultiValueHeaders) == 0 && len(resp.MultiValueHeaders) > 0 {
			resp.Headers = singleValue(resp.MultiValueHeaders)
			resp.MultiValueHeaders = nil
		}
		return resp, err
	}
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
