package lambda_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aivonx/aivonx/infra/lambda"
)

func readEvent(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// echo answers with what it saw of the request, and checks the deadline.
func echo(t *testing.T, deadline time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, ok := r.Context().Deadline(); !ok || !d.Equal(deadline.Add(-2*time.Second)) {
			t.Errorf("request deadline %v, want two seconds before the invocation's %v", d, deadline)
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		http.SetCookie(w, &http.Cookie{Name: "seen", Value: "1"})
		w.WriteHeader(http.StatusOK)
		// Flush must not fail, even though the response is buffered.
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "uri": r.URL.RequestURI(), "host": r.Host,
			"cookie": r.Header.Get("Cookie"), "body": string(b),
		})
	})
}

func deadlineCtx(t *testing.T) (context.Context, time.Time) {
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	ctx, cancel := context.WithDeadline(t.Context(), deadline)
	t.Cleanup(cancel)
	return ctx, deadline
}

func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	var e events.APIGatewayV2HTTPRequest
	readEvent(t, "http-api-request.json", &e)
	ctx, deadline := deadlineCtx(t)
	resp, err := lambda.HTTPAPI(echo(t, deadline))(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Headers["X-Multi"] != "a,b" || !reflect.DeepEqual(resp.Cookies, []string{"seen=1"}) {
		t.Fatalf("response %+v", resp)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(resp.Body), &got); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	want := map[string]string{
		"method": "GET", "uri": "/api/tags?verbose=1", "host": "aaaaaaaaaa.execute-api.eu-west-1.amazonaws.com",
		"cookie": "session=abc", "body": "",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request\n got %v\nwant %v", got, want)
	}
}

func TestALB(t *testing.T) {
	t.Parallel()
	var e events.ALBTargetGroupRequest
	readEvent(t, "alb-request.json", &e)
	ctx, deadline := deadlineCtx(t)
	resp, err := lambda.ALB(echo(t, deadline))(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Headers["Set-Cookie"] != "seen=1" {
		t.Fatalf("response %+v", resp)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(resp.Body), &got); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	want := map[string]string{
		"method": "POST", "uri": "/api/show?verbose=1", "host": "aivonx-1234567.eu-west-1.elb.amazonaws.com",
		"cookie": "session=abc", "body": `{"model":"llama3"}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request\n got %v\nwant %v", got, want)
	}
}

// TestALBCompletesTheRequest: what api-proxy leaves out of an ALB request
// (the peer, the host with multi-value headers) is filled in, and the query,
// which ALB passes as the client encoded it, is decoded once, not twice.
func TestALBCompletesTheRequest(t *testing.T) {
	t.Parallel()
	for _, multi := range []bool{false, true} {
		var e events.ALBTargetGroupRequest
		readEvent(t, "alb-request.json", &e)
		e.Headers["x-forwarded-for"] = "10.9.9.9, 72.21.198.67"
		e.QueryStringParameters = map[string]string{"name": "llama3%3A8b", "q": "a%20b", "x": "1%2B1"}
		if multi {
			e.MultiValueHeaders = map[string][]string{}
			for k, v := range e.Headers {
				e.MultiValueHeaders[k] = []string{v}
			}
			e.MultiValueQueryStringParameters = map[string][]string{"name": {"llama3%3A8b"}, "q": {"a%20b"}, "x": {"1%2B1"}}
			e.Headers, e.QueryStringParameters = nil, nil
		}
		var got *http.Request
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r })
		if _, err := lambda.ALB(h)(t.Context(), e); err != nil {
			t.Fatal(err)
		}
		q := got.URL.Query()
		if got.Host != "aivonx-1234567.eu-west-1.elb.amazonaws.com" || got.Header.Get("Host") != "" {
			t.Errorf("multi %v: Host %q, header %q", multi, got.Host, got.Header.Get("Host"))
		}
		if got.RemoteAddr != "72.21.198.67:0" || got.Header.Get("X-Forwarded-For") != "10.9.9.9" {
			t.Errorf("multi %v: RemoteAddr %q, X-Forwarded-For %q; want the peer ALB saw, and what came before it", multi, got.RemoteAddr, got.Header.Get("X-Forwarded-For"))
		}
		if q.Get("name") != "llama3:8b" || q.Get("q") != "a b" || q.Get("x") != "1+1" {
			t.Errorf("multi %v: query %v, want it decoded once", multi, q)
		}
	}
}

func TestBufferedEdges(t *testing.T) {
	// Not parallel: captureLog.
	var e events.APIGatewayV2HTTPRequest
	readEvent(t, "http-api-request.json", &e)
	cases := []struct {
		name     string
		h        http.HandlerFunc
		wantCode int
		wantBody string
	}{
		{"NoWrite", func(http.ResponseWriter, *http.Request) {}, 200, ""},
		{"FirstStatusWins", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			w.WriteHeader(http.StatusOK)
		}, http.StatusTeapot, ""},
		{"Panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") },
			500, `{"error":"internal error"}` + "\n"},
		{"Abort", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"partial":`)
			panic(http.ErrAbortHandler)
		}, 502, `{"error":"response aborted"}` + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			captureLog(t)
			resp, err := lambda.HTTPAPI(c.h)(t.Context(), e)
			if err != nil || resp.StatusCode != c.wantCode || resp.Body != c.wantBody {
				t.Fatalf("got %d %q %v, want %d %q", resp.StatusCode, resp.Body, err, c.wantCode, c.wantBody)
			}
		})
	}
	t.Run("ALBPanic", func(t *testing.T) {
		captureLog(t)
		var e events.ALBTargetGroupRequest
		readEvent(t, "alb-request.json", &e)
		resp, err := lambda.ALB(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") }))(t.Context(), e)
		if err != nil || resp.StatusCode != 500 || resp.StatusDescription != "Internal Server Error" ||
			resp.Headers["Content-Type"] != "application/json" {
			t.Fatalf("got %+v %v", resp, err)
		}
	})
}

func TestALBMultiValueHeaders(t *testing.T) {
	t.Parallel()
	var e events.ALBTargetGroupRequest
	readEvent(t, "alb-request.json", &e)
	e.MultiValueHeaders = map[string][]string{}
	for k, v := range e.Headers {
		e.MultiValueHeaders[k] = []string{v}
	}
	e.MultiValueQueryStringParameters = map[string][]string{"verbose": {"1"}}
	e.Headers, e.QueryStringParameters = nil, nil
	ctx, deadline := deadlineCtx(t)
	resp, err := lambda.ALB(echo(t, deadline))(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Headers != nil ||
		!reflect.DeepEqual(resp.MultiValueHeaders["X-Multi"], []string{"a", "b"}) ||
		!reflect.DeepEqual(resp.MultiValueHeaders["Set-Cookie"], []string{"seen=1"}) {
		t.Fatalf("response %+v", resp)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(resp.Body), &got); err != nil || got["uri"] != "/api/show?verbose=1" || got["cookie"] != "session=abc" {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
}
