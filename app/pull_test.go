package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/internal/fakeollama"
)

func (e *manageEnv) client() *api.Client {
	u, _ := url.Parse(e.srv.URL)
	return api.NewClient(u, testClient)
}

func TestProxyPull(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)

	t.Run("OneNodeRoutableAtOnce", func(t *testing.T) {
		res := e.expect("POST", "/api/proxy/pull", `{"model":"tiny","node_id":2}`, 200)
		results := res["results"].([]any)
		r0 := results[0].(map[string]any)
		if res["model"] != "tiny" || res["total_nodes"].(float64) != 1 || r0["status"] != "success" || r0["node_id"].(float64) != 2 ||
			r0["node_name"] != "nodeB" || r0["node_address"] != b.URL() || r0["message"] == "" {
			t.Fatalf("pull = %v", res)
		}
		if !slices.Contains(b.Models(), "tiny:latest") || slices.Contains(a.Models(), "tiny:latest") {
			t.Fatalf("models: a=%v b=%v", a.Models(), b.Models())
		}
		// No health pass ran: the pull refreshed the node.
		status, body := e.do("POST", "/api/generate", `{"model":"tiny","prompt":"hi","stream":false}`)
		if status != 200 {
			t.Fatalf("generate right after the pull: %d %s", status, body)
		}
	})

	t.Run("EveryNodeStreamed", func(t *testing.T) {
		status, body := e.do("POST", "/api/proxy/pull", `{"model":"qwen:0.5b","stream":true}`)
		if status != 200 {
			t.Fatalf("status %d: %s", status, body)
		}
		progress := map[float64]int{}
		summaries := map[float64]string{}
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			id, _ := line["node_id"].(float64)
			if line["node_name"] == nil || id == 0 {
				t.Fatalf("line without its node: %v", line)
			}
			if line["done"] == true {
				summaries[id] = line["status"].(string)
			} else {
				if line["status"] == "success" {
					t.Fatalf("a node's success line is replaced by the summary: %v", line)
				}
				progress[id]++
			}
		}
		if summaries[1] != "success" || summaries[2] != "success" || progress[1] == 0 || progress[2] == 0 {
			t.Fatalf("summaries %v, progress %v", summaries, progress)
		}
	})

	t.Run("FailedNodeReported", func(t *testing.T) {
		b.Stop()
		defer b.Restart()
		res := e.expect("POST", "/api/proxy/pull", `{"model":"phi3"}`, 200)
		byNode := map[float64]string{}
		for _, r := range res["results"].([]any) {
			r := r.(map[string]any)
			byNode[r["node_id"].(float64)] = r["status"].(string) + ": " + r["message"].(string)
		}
		if !strings.HasPrefix(byNode[1], "success") || !strings.HasPrefix(byNode[2], "error") {
			t.Fatalf("results = %v", byNode)
		}
		// Upstream's HTTP error form.
		res = e.expect("POST", "/api/proxy/pull", `{"model":"bad name!","node_id":1}`, 200)
		if msg := res["results"].([]any)[0].(map[string]any)["message"].(string); !strings.HasPrefix(msg, "HTTP 400: ") {
			t.Fatalf("message = %q", msg)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for _, tt := range []struct {
			body   string
			status int
			msg    string
		}{
			{`{}`, 400, "model name is required"},
			{`{"model":"  "}`, 400, "model name is required"},
			{`{"model":"x","node_id":"abc"}`, 400, "invalid node_id: must be an integer"},
			{`{"model":"x","node_id":1.5}`, 400, "invalid node_id: must be an integer"},
			{`{"model":"x","node_id":99}`, 404, "node not found: 99"},
		} {
			if body := e.expect("POST", "/api/proxy/pull", tt.body, tt.status); body["error"] != tt.msg {
				t.Fatalf("%s: %v", tt.body, body)
			}
		}
		// A form body, as the upstream accepted.
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/proxy/pull", strings.NewReader("model=&node_id=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(body, "model name is required") {
			t.Fatalf("form: %d %s", resp.StatusCode, body)
		}
		// Every node drained.
		e.expect("PATCH", "/api/proxy/nodes/1", `{"enabled":false}`, 200)
		e.expect("PATCH", "/api/proxy/nodes/2", `{"enabled":false}`, 200)
		defer e.expect("PATCH", "/api/proxy/nodes/1", `{"enabled":true}`, 200)
		defer e.expect("PATCH", "/api/proxy/nodes/2", `{"enabled":true}`, 200)
		if body := e.expect("POST", "/api/proxy/pull", `{"model":"x"}`, 404); body["error"] != "no active nodes available" {
			t.Fatalf("no nodes: %v", body)
		}
		if body := e.expect("POST", "/api/proxy/pull", `{"model":"x","node_id":1}`, 404); body["error"] != "node not found: 1" {
			t.Fatalf("disabled node: %v", body)
		}
	})
}

func TestOllamaPullMergedProgress(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)
	ctx := context.Background()
	client := e.client()

	var lines []api.ProgressResponse
	err := client.Pull(ctx, &api.PullRequest{Model: "tiny"}, func(p api.ProgressResponse) error {
		lines = append(lines, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 || lines[len(lines)-1].Status != "success" {
		t.Fatalf("progress = %+v", lines)
	}
	seen := map[string]int{}
	last := map[string]api.ProgressResponse{}
	for _, p := range lines {
		if p.Digest == "" {
			seen[p.Status]++
			continue
		}
		if prev, ok := last[p.Digest]; ok && (p.Completed < prev.Completed || p.Total != prev.Total) {
			t.Fatalf("layer %s went from %+v to %+v", p.Digest, prev, p)
		}
		if p.Completed > p.Total {
			t.Fatalf("completed > total: %+v", p)
		}
		last[p.Digest] = p
	}
	for status, n := range seen {
		if n != 1 {
			t.Fatalf("status %q sent %d times", status, n)
		}
	}
	if len(last) == 0 {
		t.Fatal("no layer progress")
	}
	for d, p := range last {
		if p.Completed != p.Total {
			t.Fatalf("layer %s ended at %+v", d, p)
		}
	}
	// The sizes are the model's own, as one node reports them (not times
	// the number of nodes), and once a node-wide step follows the layers
	// ("verifying sha256 digest"…) no layer line comes after it.
	alone := fakeollama.Start(t, fakeollama.Options{})
	base, _ := url.Parse(alone.URL())
	err = api.NewClient(base, testClient).Pull(ctx, &api.PullRequest{Model: "tiny"}, func(p api.ProgressResponse) error {
		if merged, ok := last[p.Digest]; ok && p.Total > 0 && merged.Total != p.Total {
			t.Errorf("layer %s: %d bytes through the proxy, %d on one node", p.Digest, merged.Total, p.Total)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	afterLayers := false
	for _, p := range lines {
		switch {
		case p.Digest == "" && p.Status != "pulling manifest":
			afterLayers = afterLayers || p.Status != ""
		case p.Digest != "" && afterLayers:
			t.Fatalf("layer line %+v after a node-wide step: %+v", p, lines)
		}
	}
	for _, n := range []*fakeollama.Server{a, b} {
		if !slices.Contains(n.Models(), "tiny:latest") {
			t.Fatalf("node lacks the model: %v", n.Models())
		}
	}
	// Routable at once, through the Go client too.
	if _, err := client.Show(ctx, &api.ShowRequest{Model: "tiny"}); err != nil {
		t.Fatalf("show right after the pull: %v", err)
	}
	list, err := client.List(ctx)
	if err != nil || !slices.ContainsFunc(list.Models, func(m api.ListModelResponse) bool { return m.Name == "tiny:latest" }) {
		t.Fatalf("list = %+v, %v", list, err)
	}

	t.Run("StreamFalse", func(t *testing.T) {
		status, body := e.do("POST", "/api/pull", `{"name":"phi3","stream":false}`)
		if status != 200 || strings.TrimSpace(body) != `{"status":"success"}` {
			t.Fatalf("%d %s", status, body)
		}
	})

	t.Run("InvalidNameAnsweredLikeOllama", func(t *testing.T) {
		err := client.Pull(ctx, &api.PullRequest{Model: "bad name!"}, func(api.ProgressResponse) error { return nil })
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 400 {
			t.Fatalf("err = %#v", err)
		}
		if status, _ := e.do("POST", "/api/pull", `{}`); status != 400 {
			t.Fatalf("no model: %d", status)
		}
	})

	t.Run("FailedNodeNamedInError", func(t *testing.T) {
		b.Stop() // still healthy in the view: the pull finds out
		defer b.Restart()
		err := client.Pull(ctx, &api.PullRequest{Model: "gemma"}, func(api.ProgressResponse) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "nodeB") || !strings.Contains(err.Error(), "1 of 2") {
			t.Fatalf("err = %v", err)
		}
		if !slices.Contains(a.Models(), "gemma:latest") {
			t.Fatalf("the healthy node lacks the model: %v", a.Models())
		}
		// The failed connection marked nodeB unreachable: the next pull
		// goes to the healthy node only, and succeeds.
		status, body := e.do("POST", "/api/pull", `{"model":"gemma2","stream":false}`)
		if status != 200 || !slices.Contains(a.Models(), "gemma2:latest") {
			t.Fatalf("stream:false after the mark: %d %s", status, body)
		}
	})
}

func TestOllamaModelManagement(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest", "shared:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"shared:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)
	ctx := context.Background()
	client := e.client()

	t.Run("ServerRoutesAskANode", func(t *testing.T) {
		// What `ollama run` asks before a cloud model, and the CLI's cloud
		// check: a node answers.
		me, err := client.Whoami(ctx)
		if err != nil || !strings.HasPrefix(me.Name, "fake-") {
			t.Fatalf("Whoami = %+v, %v", me, err)
		}
		st, err := client.CloudStatusExperimental(ctx)
		if err != nil || st.Cloud.Disabled || st.Cloud.Source != "none" {
			t.Fatalf("CloudStatusExperimental = %+v, %v", st, err)
		}
	})
	t.Run("ErrNodeSignedOut", func(t *testing.T) {
		// The node's sign-in link would sign the shared node in to whoever
		// opened it: the client gets the 401 without it.
		out := fakeollama.Start(t, fakeollama.Options{Models: []string{"llama3:latest"}, SignedOut: true})
		e := newManageEnv(t, app.Config{}, app.Deps{}, out)
		status, body := e.do("POST", "/api/me", "")
		if status != 401 || strings.Contains(body, "signin_url") || strings.Contains(body, "connect?") || !strings.Contains(body, "not signed in") {
			t.Fatalf("POST /api/me with the node signed out: %d %s", status, body)
		}
		// The Go client keeps a 401's Status, which says what to do.
		_, err := e.client().Whoami(ctx)
		var ae api.AuthorizationError
		if !errors.As(err, &ae) || ae.SigninURL != "" || !strings.Contains(ae.Status, "not signed in") {
			t.Fatalf("Whoami with the node signed out: %#v", err)
		}
	})
	t.Run("DeleteFansOut", func(t *testing.T) {
		if err := client.Delete(ctx, &api.DeleteRequest{Model: "shared"}); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(a.Models(), "shared:latest") || slices.Contains(b.Models(), "shared:latest") {
			t.Fatalf("still there: a=%v b=%v", a.Models(), b.Models())
		}
		list, _ := client.List(ctx)
		for _, m := range list.Models {
			if m.Name == "shared:latest" {
				t.Fatal("deleted model still listed")
			}
		}
		err := client.Delete(ctx, &api.DeleteRequest{Model: "shared"})
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(se.ErrorMessage, "not found") {
			t.Fatalf("second delete: %#v", err)
		}
	})

	t.Run("CopyWhereTheSourceIs", func(t *testing.T) {
		if err := client.Copy(ctx, &api.CopyRequest{Source: "llama3", Destination: "llama3-copy"}); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(a.Models(), "llama3-copy:latest") || slices.Contains(b.Models(), "llama3-copy:latest") {
			t.Fatalf("a=%v b=%v", a.Models(), b.Models())
		}
		if status, _ := e.do("POST", "/api/chat", `{"model":"llama3-copy","stream":false}`); status != 200 {
			t.Fatalf("copy not routable: %d", status)
		}
		err := client.Copy(ctx, &api.CopyRequest{Source: "nope", Destination: "x"})
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 {
			t.Fatalf("copy of a missing model: %#v", err)
		}
		if status, _ := e.do("POST", "/api/copy", `{"source":"llama3"}`); status != 400 {
			t.Fatalf("no destination: %d", status)
		}
	})

	t.Run("BlobsThenCreateAnywhere", func(t *testing.T) {
		data := []byte("a GGUF file, more or less")
		sum := sha256.Sum256(data)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if status, _ := e.do("HEAD", "/api/blobs/"+digest, ""); status != 404 {
			t.Fatalf("HEAD before upload: %d", status)
		}
		if err := client.CreateBlob(ctx, digest, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if status, _ := e.do("HEAD", "/api/blobs/"+digest, ""); status != 200 {
			t.Fatalf("HEAD after upload: %d", status)
		}
		// Already everywhere: 200.
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/blobs/"+digest, bytes.NewReader(data))
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("second upload: %d", resp.StatusCode)
		}
		// A digest mismatch is every node's 400.
		req, _ = http.NewRequest("POST", e.srv.URL+"/api/blobs/sha256:"+strings.Repeat("0", 64), bytes.NewReader(data))
		resp, err = testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(body, "digest mismatch") {
			t.Fatalf("mismatch: %d %s", resp.StatusCode, body)
		}

		// What is not a digest is refused before any node sees it (the
		// path value is decoded: the first would be /api/delete behind a
		// proxy that cleans paths), as Ollama refuses it; the fake node
		// knows no such message.
		for _, bad := range []string{"..%2F..%2Fapi%2Fdelete", "sha256:" + strings.Repeat("0", 63), "md5:" + strings.Repeat("0", 64)} {
			req, _ = http.NewRequest("POST", e.srv.URL+"/api/blobs/"+bad, bytes.NewReader(data))
			resp, err = testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); resp.StatusCode != 400 || body != `{"error":"invalid digest format"}`+"\n" {
				t.Fatalf("POST of %s: %d %q", bad, resp.StatusCode, body)
			}
			if status, _ := e.do("HEAD", "/api/blobs/"+bad, ""); status != 400 {
				t.Fatalf("HEAD of %s: %d", bad, status)
			}
			decoded, _ := url.PathUnescape(bad)
			if n := a.Requests("/api/blobs/"+decoded) + b.Requests("/api/blobs/"+decoded); n != 0 {
				t.Fatalf("%s reached the nodes %d times", bad, n)
			}
		}

		var statuses []string
		err = client.Create(ctx, &api.CreateRequest{Model: "mine", Files: map[string]string{"model.gguf": digest}}, func(p api.ProgressResponse) error {
			statuses = append(statuses, p.Status)
			return nil
		})
		if err != nil || statuses[len(statuses)-1] != "success" {
			t.Fatalf("create: %v %v", statuses, err)
		}
		if !slices.Contains(a.Models(), "mine:latest") && !slices.Contains(b.Models(), "mine:latest") {
			t.Fatal("no node has the created model")
		}
		if status, body := e.do("POST", "/api/generate", `{"model":"mine","prompt":"x","stream":false}`); status != 200 {
			t.Fatalf("created model not routable: %d %s", status, body)
		}
	})

	t.Run("CreateFromGoesWhereTheBaseIs", func(t *testing.T) {
		if err := client.Create(ctx, &api.CreateRequest{Model: "llama3-sys", From: "llama3", System: "be brief"}, func(api.ProgressResponse) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(a.Models(), "llama3-sys:latest") {
			t.Fatalf("a=%v b=%v", a.Models(), b.Models())
		}
	})

	t.Run("PushFromTheNodeThatHasIt", func(t *testing.T) {
		var last string
		if err := client.Push(ctx, &api.PushRequest{Model: "llama3"}, func(p api.ProgressResponse) error { last = p.Status; return nil }); err != nil || last != "success" {
			t.Fatalf("push: %v %q", err, last)
		}
		if a.Requests("/api/push") != 1 || b.Requests("/api/push") != 0 {
			t.Fatalf("push went to a=%d b=%d", a.Requests("/api/push"), b.Requests("/api/push"))
		}
		err := client.Push(ctx, &api.PushRequest{Model: "nope"}, func(api.ProgressResponse) error { return nil })
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != 404 {
			t.Fatalf("push of a missing model: %#v", err)
		}
	})
}

// TestPullCutAtShutdown: a pull still running when the shutdown's grace
// ends (EndStreams) ends with an error line, not a stream that stops
// without {"status":"success"}, which the ollama CLI takes for a finished
// pull. The nodes' pulls are cancelled with it.
func TestPullCutAtShutdown(t *testing.T) {
	started, cancelled := make(chan struct{}, 2), make(chan struct{}, 2)
	pullThenWait := func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write([]byte(`{"status":"pulling manifest"}` + "\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		cancelled <- struct{}{}
	}
	e := newEnv(t, app.Config{}, scriptNode(t, pullThenWait), scriptNode(t, pullThenWait))
	resp := e.post("/api/pull", `{"model":"tiny"}`)
	rd := bufio.NewReader(resp.Body)
	if first, err := rd.ReadString('\n'); err != nil || !strings.Contains(first, "pulling manifest") {
		t.Fatalf("first line %q, %v", first, err)
	}
	for range 2 {
		<-started // both nodes pulling, not only the first to answer
	}
	e.h.EndStreams()
	rest, _ := io.ReadAll(rd)
	resp.Body.Close()
	var last struct{ Error, Status string }
	if err := json.Unmarshal(bytes.TrimSpace(rest), &last); err != nil || !strings.Contains(last.Error, "aivonx is shutting down") {
		t.Fatalf("after EndStreams: %q; want one error line", rest)
	}
	for range 2 {
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("a node's pull was not cancelled")
		}
	}

	// Once ended, a pull that has not started answers 503 at once.
	status, body := func() (int, string) {
		resp := e.post("/api/pull", `{"model":"tiny","stream":false}`)
		return resp.StatusCode, readAll(t, resp)
	}()
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("a pull after EndStreams: %d %s", status, body)
	}
}

// A delete reaches a disabled (drained) node too: it is up and keeps its
// models, which it would serve again once enabled.
func TestDeleteReachesDisabledNodes(t *testing.T) {
	a := fakeollama.Start(t, fakeollama.Options{Models: []string{"shared:latest"}})
	b := fakeollama.Start(t, fakeollama.Options{Models: []string{"shared:latest"}})
	e := newManageEnv(t, app.Config{}, app.Deps{}, a, b)
	e.expect("PATCH", "/api/proxy/nodes/2", `{"enabled":false}`, 200)
	e.pass()
	if status, body := e.do("DELETE", "/api/delete", `{"model":"shared"}`); status != 200 {
		t.Fatalf("delete: %d %s", status, body)
	}
	if slices.Contains(a.Models(), "shared:latest") || slices.Contains(b.Models(), "shared:latest") {
		t.Fatalf("left on a node: a=%v b (disabled)=%v", a.Models(), b.Models())
	}
}
