package lambda_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aivonx/aivonx/infra/lambda"
	"github.com/aivonx/aivonx/internal/testenv"
)

// prelude is the JSON head of a streamed Function URL response.
type prelude struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Cookies    []string          `json:"cookies"`
}

// streamed is a Function URL response read as the runtime reads it.
type streamed struct {
	prelude
	body *bufio.Reader
	resp *events.LambdaFunctionURLStreamingResponse
}

// invoke calls the adapter as the runtime does and decodes the wire format:
// the prelude JSON, 8 NUL bytes, then the body.
func invoke(t *testing.T, ctx context.Context, h http.Handler, e *events.LambdaFunctionURLRequest) *streamed {
	t.Helper()
	resp, err := lambda.FunctionURL(h)(ctx, e)
	if err != nil {
		t.Fatalf("FunctionURL: %v", err)
	}
	t.Cleanup(func() { resp.Close() })
	if got := resp.ContentType(); got != "application/vnd.awslambda.http-integration-response" {
		t.Fatalf("content type %q", got)
	}
	br := bufio.NewReader(resp)
	head, err := br.ReadBytes(0)
	if err != nil {
		t.Fatalf("read prelude: %v", err)
	}
	var rest [7]byte
	if _, err := io.ReadFull(br, rest[:]); err != nil || rest != [7]byte{} {
		t.Fatalf("prelude not followed by 8 NULs: %q %v", rest, err)
	}
	s := &streamed{body: br, resp: resp}
	if err := json.Unmarshal(head[:len(head)-1], &s.prelude); err != nil {
		t.Fatalf("prelude %q: %v", head, err)
	}
	return s
}

// within runs f and fails the test if it takes longer than 5 seconds.
func within[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	c := make(chan T, 1)
	go func() { c <- f() }()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: timed out", what)
		panic("unreachable")
	}
}

type lineResult struct {
	line string
	err  error
}

func readLine(t *testing.T, s *streamed) (string, error) {
	t.Helper()
	r := within(t, "read line", func() lineResult {
		l, err := s.body.ReadString('\n')
		return lineResult{l, err}
	})
	return r.line, r.err
}

func readAll(t *testing.T, s *streamed) ([]byte, error) {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	r := within(t, "read body", func() res {
		b, err := io.ReadAll(s.body)
		return res{b, err}
	})
	return r.b, r.err
}

func event(t *testing.T, name string) *events.LambdaFunctionURLRequest {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var e events.LambdaFunctionURLRequest
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return &e
}

func get(path string) *events.LambdaFunctionURLRequest {
	e := &events.LambdaFunctionURLRequest{Version: "2.0", RawPath: path}
	e.RequestContext.DomainName = "abcdefghij.lambda-url.eu-west-1.on.aws"
	e.RequestContext.HTTP.Method = http.MethodGet
	e.RequestContext.HTTP.SourceIP = "203.0.113.7"
	return e
}

// captureLog sends slog.Default to a buffer for the test. Tests that use it
// must not run in parallel.
func captureLog(t *testing.T) *testenv.Buffer {
	t.Helper()
	old := slog.Default()
	buf := &testenv.Buffer{}
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

func TestFunctionURLStreamsEachFlush(t *testing.T) {
	flushers := map[string]func(http.ResponseWriter) error{
		"ResponseController": func(w http.ResponseWriter) error { return http.NewResponseController(w).Flush() },
		"Flusher": func(w http.ResponseWriter) error {
			f, ok := w.(http.Flusher)
			if !ok {
				return errors.New("not an http.Flusher")
			}
			f.Flush()
			return nil
		},
	}
	for name, flush := range flushers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			next := make(chan struct{})
			wrote2 := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-ndjson")
				io.WriteString(w, `{"message":{"content":"Hel"},"done":false}`+"\n")
				if err := flush(w); err != nil {
					t.Errorf("flush: %v", err)
				}
				<-next
				io.WriteString(w, `{"message":{"content":"lo"},"done":true}`+"\n")
				close(wrote2)
			})
			s := invoke(t, t.Context(), h, get("/api/chat"))
			if s.StatusCode != 200 || s.Headers["Content-Type"] != "application/x-ndjson" {
				t.Fatalf("prelude %+v", s.prelude)
			}

			// The handler cannot write line 2 before next is closed, so
			// line 1 must already be readable.
			line, err := readLine(t, s)
			if err != nil || line != `{"message":{"content":"Hel"},"done":false}`+"\n" {
				t.Fatalf("line 1 = %q, %v", line, err)
			}
			select {
			case <-wrote2:
				t.Fatal("line 2 written before line 1 was read")
			default:
			}
			close(next)
			line, err = readLine(t, s)
			if err != nil || line != `{"message":{"content":"lo"},"done":true}`+"\n" {
				t.Fatalf("line 2 = %q, %v", line, err)
			}
			if rest, err := readAll(t, s); err != nil || len(rest) != 0 {
				t.Fatalf("after line 2: %q, %v", rest, err)
			}
		})
	}
}

// Lines written with pauses are read one by one, each before the handler
// even starts writing the next: nothing buffers between the handler and the
// runtime.
func TestFunctionURLChunkTiming(t *testing.T) {
	t.Parallel()
	const gap = 80 * time.Millisecond
	var writeAt [3]time.Time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range writeAt {
			if i > 0 {
				time.Sleep(gap)
			}
			writeAt[i] = time.Now()
			io.WriteString(w, "line\n")
		}
	})
	s := invoke(t, t.Context(), h, get("/"))
	var readAt []time.Time
	for {
		_, err := readLine(t, s)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		readAt = append(readAt, time.Now())
	}
	if len(readAt) != 3 {
		t.Fatalf("%d lines", len(readAt))
	}
	// The handler has returned (EOF), so writeAt is safe to read.
	for i := range 2 {
		if !readAt[i].Before(writeAt[i+1]) {
			t.Errorf("line %d read %v after line %d was written", i+1, readAt[i].Sub(writeAt[i+1]), i+2)
		}
	}
	t.Logf("read after write: %v, %v, %v", readAt[0].Sub(writeAt[0]), readAt[1].Sub(writeAt[1]), readAt[2].Sub(writeAt[2]))
}

func TestFunctionURLStatusAndHeaders(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.Header().Add("Vary", "Accept")
		w.Header().Add("Vary", "Origin")
		w.Header()["X-Empty"] = nil
		w.Header().Set("Connection", "close")          // the URL's business
		w.Header().Set("Transfer-Encoding", "chunked") // idem
		w.Header().Set("Trailer", "X-Checksum")        // trailers cannot be sent
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "abc", Path: "/", HttpOnly: true})
		http.SetCookie(w, &http.Cookie{Name: "theme", Value: "dark"})
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusInternalServerError) // ignored: the first status wins
		w.Header().Set("X-Late", "ignored")           // headers went out with the status
		io.WriteString(w, `{"ok":true}`)
	})
	s := invoke(t, t.Context(), h, get("/"))
	want := prelude{
		StatusCode: http.StatusCreated,
		Headers: map[string]string{
			"Content-Type": "application/json",
			"X-Multi":      "a,b",
			"Vary":         "Accept,Origin",
		},
		Cookies: []string{"session=abc; Path=/; HttpOnly", "theme=dark"},
	}
	if !reflect.DeepEqual(s.prelude, want) {
		t.Fatalf("prelude\n got %+v\nwant %+v", s.prelude, want)
	}
	if b, err := readAll(t, s); err != nil || string(b) != `{"ok":true}` {
		t.Fatalf("body %q, %v", b, err)
	}
}

func TestFunctionURLDefaults(t *testing.T) {
	t.Parallel()
	t.Run("NoWrite", func(t *testing.T) {
		t.Parallel()
		s := invoke(t, t.Context(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), get("/"))
		if s.StatusCode != 200 || s.Headers != nil || s.Cookies != nil {
			t.Fatalf("prelude %+v", s.prelude)
		}
		if b, err := readAll(t, s); err != nil || len(b) != 0 {
			t.Fatalf("body %q, %v", b, err)
		}
	})
	t.Run("SniffedContentType", func(t *testing.T) {
		t.Parallel()
		s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<!DOCTYPE html><html></html>")
		}), get("/"))
		if s.StatusCode != 200 || s.Headers["Content-Type"] != "text/html; charset=utf-8" {
			t.Fatalf("prelude %+v", s.prelude)
		}
	})
	t.Run("FlushSendsHeaders", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			http.NewResponseController(w).Flush()
			<-release // the prelude is out although nothing was written
		}), get("/"))
		if s.StatusCode != 200 || s.Headers["Content-Type"] != "text/event-stream" {
			t.Fatalf("prelude %+v", s.prelude)
		}
		close(release)
	})
	t.Run("WriteHeaderSendsHeaders", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			<-release
		}), get("/"))
		if s.StatusCode != http.StatusAccepted {
			t.Fatalf("prelude %+v", s.prelude)
		}
		close(release)
	})
	t.Run("Informational", func(t *testing.T) {
		t.Parallel()
		s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints) // a Function URL cannot send it
			w.WriteHeader(http.StatusNoContent)
		}), get("/"))
		if s.StatusCode != http.StatusNoContent {
			t.Fatalf("prelude %+v", s.prelude)
		}
	})
}

func TestFunctionURLRequest(t *testing.T) {
	t.Parallel()
	e := event(t, "function-url-request.json")
	type seen struct {
		Method, Path, RawPath, RawQuery, RequestURI, Host, Proto string
		Cookie, Accept, ContentType, UserAgent                   string
		Session, HostHeader                                      string
		Tags                                                     []string
		Body                                                     string
		ContentLength                                            int64
		RemoteAddr                                               string
		TLS                                                      bool
		CallerARN                                                string
	}
	var got seen
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = seen{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
			RequestURI: r.RequestURI, Host: r.Host, Proto: r.Proto,
			Cookie: r.Header.Get("Cookie"), Accept: r.Header.Get("Accept"),
			ContentType: r.Header.Get("Content-Type"), UserAgent: r.UserAgent(),
			HostHeader: r.Header.Get("Host"),
			Tags:       r.URL.Query()["tag"],
			Body:       string(b), ContentLength: r.ContentLength,
			RemoteAddr: r.RemoteAddr, TLS: r.TLS != nil,
		}
		if c, err := r.Cookie("session"); err == nil {
			got.Session = c.Value
		}
		if ev, ok := lambda.RequestFromContext(r.Context()); ok && ev.RequestContext.Authorizer != nil {
			got.CallerARN = ev.RequestContext.Authorizer.IAM.UserARN
		}
	})
	s := invoke(t, t.Context(), h, e)
	readAll(t, s)
	want := seen{
		Method: "POST", Path: "/api/chat/a/b", RawPath: "/api/chat/a%2Fb", RawQuery: "stream=true&tag=x&tag=y",
		RequestURI: "/api/chat/a%2Fb?stream=true&tag=x&tag=y", Host: "abcdefghij.lambda-url.eu-west-1.on.aws", Proto: "HTTP/1.1",
		Cookie: "session=abc; theme=dark", Accept: "application/x-ndjson, text/plain",
		ContentType: "application/json", UserAgent: "curl/8.5.0",
		Session: "abc", HostHeader: "",
		Tags: []string{"x", "y"},
		Body: `{"model":"llama3","messages":[],"stream":true}`, ContentLength: 46,
		RemoteAddr: "203.0.113.7", TLS: true,
		CallerARN: "arn:aws:iam::123456789012:user/ops",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request\n got %+v\nwant %+v", got, want)
	}
}

func TestFunctionURLDoubleSlashIsAPath(t *testing.T) {
	t.Parallel()
	var path, host string
	s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, host = r.URL.Path, r.Host
	}), get("//evil.example/api/tags"))
	readAll(t, s)
	if path != "//evil.example/api/tags" || host != "abcdefghij.lambda-url.eu-west-1.on.aws" {
		t.Fatalf("path %q host %q", path, host)
	}
}

func TestFunctionURLCookieHeaderAndList(t *testing.T) {
	t.Parallel()
	// Some Function URL events keep the Cookie header next to the list.
	e := get("/")
	e.Headers = map[string]string{"cookie": "a=1; b=2"}
	e.Cookies = []string{"a=1", "b=2", "c=3"}
	var cookie string
	s := invoke(t, t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cookie = r.Header.Get("Cookie")
	}), e)
	readAll(t, s)
	if cookie != "a=1; b=2; c=3" {
		t.Fatalf("Cookie %q", cookie)
	}
}

func TestFunctionURLBinaryBodies(t *testing.T) {
	t.Parallel()
	payload := make([]byte, 256*3)
	for i := range payload {
		payload[i] = byte(i)
	}
	e := get("/blob")
	e.RequestContext.HTTP.Method = http.MethodPut
	e.Body = base64.StdEncoding.EncodeToString(payload)
	e.IsBase64Encoded = true
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		if r.ContentLength != int64(len(payload)) {
			t.Errorf("ContentLength %d", r.ContentLength)
		}
		w.Write(b) // echo, byte for byte
	})
	s := invoke(t, t.Context(), h, e)
	if s.Headers["Content-Type"] != "application/octet-stream" {
		t.Fatalf("prelude %+v", s.prelude)
	}
	b, err := readAll(t, s)
	if err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("body differs (%d bytes, %v)", len(b), err)
	}

	e.Body = "%%%not base64"
	if _, err := lambda.FunctionURL(h)(t.Context(), e); err == nil {
		t.Fatal("bad base64 body: no error")
	}
}

func TestFunctionURLPanic(t *testing.T) {
	// Not parallel: captures slog.Default.
	t.Run("BeforeWrite", func(t *testing.T) {
		logs := captureLog(t)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-Id", "r-1") // prepared for a response that never came
			panic("boom")
		})
		s := invoke(t, t.Context(), h, get("/api/chat"))
		want := prelude{StatusCode: 500, Headers: map[string]string{"Content-Type": "application/json"}}
		if !reflect.DeepEqual(s.prelude, want) {
			t.Fatalf("prelude %+v", s.prelude)
		}
		b, err := readAll(t, s)
		if err != nil || string(b) != `{"error":"internal error"}`+"\n" {
			t.Fatalf("body %q, %v", b, err)
		}
		if l := logs.String(); !strings.Contains(l, "panic serving request") || !strings.Contains(l, "panic=boom") ||
			!strings.Contains(l, "path=/api/chat") || !strings.Contains(l, "stack=") {
			t.Fatalf("log: %s", l)
		}
	})
	t.Run("MidStream", func(t *testing.T) {
		logs := captureLog(t)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"done":false}`+"\n")
			panic("boom mid-stream")
		})
		s := invoke(t, t.Context(), h, get("/api/chat"))
		if s.StatusCode != 200 {
			t.Fatalf("prelude %+v", s.prelude)
		}
		b, err := readAll(t, s)
		if string(b) != `{"done":false}`+"\n" {
			t.Fatalf("body %q", b)
		}
		// The runtime turns this read error into its error trailers.
		if err == nil || err.Error() != "handler panic: boom mid-stream" {
			t.Fatalf("read error %v, want the panic", err)
		}
		if !strings.Contains(logs.String(), "response_started=true") {
			t.Fatalf("log: %s", logs)
		}
	})
	t.Run("AbortHandler", func(t *testing.T) {
		logs := captureLog(t)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"partial":`)
			panic(http.ErrAbortHandler)
		})
		s := invoke(t, t.Context(), h, get("/api/show"))
		_, err := readAll(t, s)
		if err == nil || !strings.Contains(err.Error(), http.ErrAbortHandler.Error()) {
			t.Fatalf("read error %v, want the abort", err)
		}
		if l := logs.String(); !strings.Contains(l, "aborted the response") || strings.Contains(l, "stack=") {
			t.Fatalf("log: %s", l)
		}
	})
}

func TestFunctionURLDeadline(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	ctx, cancel := context.WithDeadline(t.Context(), deadline)
	defer cancel()
	got := make(chan time.Time, 1)
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := r.Context().Deadline()
		got <- d
		w.WriteHeader(http.StatusOK)
		<-r.Context().Done() // an upstream call bounded by the invocation
		done <- r.Context().Err()
	})
	s := invoke(t, ctx, h, get("/api/chat"))
	if d := <-got; !d.Equal(deadline.Add(-2 * time.Second)) {
		t.Fatalf("request deadline %v, want two seconds before the invocation's %v", d, deadline)
	}
	cancel()
	if err := within(t, "handler end", func() error { return <-done }); !errors.Is(err, context.Canceled) {
		t.Fatalf("request context: %v", err)
	}
	readAll(t, s)
}

// When the runtime stops reading (it closes the response), the handler's
// writes fail instead of blocking forever.
func TestFunctionURLReaderClosed(t *testing.T) {
	t.Parallel()
	werr := make(chan error, 1)
	proceed := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		<-proceed
		_, err := io.WriteString(w, "late\n")
		werr <- errors.Join(err, http.NewResponseController(w).Flush())
	})
	s := invoke(t, t.Context(), h, get("/"))
	s.resp.Close()
	close(proceed)
	err := within(t, "write", func() error { return <-werr })
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write after close: %v", err)
	}
}

// The request's context ends before the invocation's deadline, a tenth of
// the time left and at most two seconds, so that a handler can end its
// answer in words before Lambda stops the process.
func TestBeforeDeadline(t *testing.T) {
	for _, left := range []time.Duration{time.Second, time.Minute} {
		deadline := time.Now().Add(left)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		short, cancelShort := lambda.BeforeDeadline(ctx)
		got, ok := short.Deadline()
		want := min(2*time.Second, left/10)
		if margin := deadline.Sub(got); !ok || margin < want-50*time.Millisecond || margin > want {
			t.Errorf("%s left: the request ends %s before the deadline; want %s", left, margin, want)
		}
		cancelShort()
		cancel()
	}
	if _, ok := mustCtx(lambda.BeforeDeadline(context.Background())).Deadline(); ok {
		t.Error("a context without a deadline got one")
	}
}

func mustCtx(ctx context.Context, cancel context.CancelFunc) context.Context {
	cancel()
	return ctx
}
