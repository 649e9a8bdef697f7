package fakeollama

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

// progress writes the status stream of pull, push and create: NDJSON lines
// when streaming, or only the last message with stream:false (Ollama's
// streamResponse and waitForStream).
type progress struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	rc      *http.ResponseController
	stream  bool
	started bool
	last    api.ProgressResponse
	timer   *time.Timer
}

func (s *Server) newProgress(w http.ResponseWriter, r *http.Request, stream *bool) *progress {
	return &progress{s: s, w: w, r: r, rc: http.NewResponseController(w), stream: stream == nil || *stream}
}

// send emits one status message; steps after the first are paced by the
// token delay (not by the gate). False if the client went away.
func (p *progress) send(msg api.ProgressResponse) bool {
	if p.started || p.last.Status != "" {
		if d := time.Duration(p.s.tokenDelay.Load()); d > 0 {
			if p.timer == nil {
				p.timer = time.NewTimer(d)
			} else {
				p.timer.Reset(d)
			}
			select {
			case <-p.timer.C:
			case <-p.r.Context().Done():
				return false
			}
		}
	}
	if p.r.Context().Err() != nil {
		return false
	}
	if !p.stream {
		p.last = msg
		return true
	}
	b, _ := json.Marshal(msg)
	if !p.started {
		p.started = true
		p.w.Header()["Content-Type"] = []string{ctNDJSON}
		p.w.WriteHeader(http.StatusOK)
	}
	if _, err := p.w.Write(append(b, '\n')); err != nil {
		return false
	}
	return p.rc.Flush() == nil
}

// fail ends the stream with an error: an {"error"} line once bytes were
// sent, else a status-coded JSON error with Content-Type application/json.
func (p *progress) fail(status int, msg string) {
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.started {
		_, _ = p.w.Write(append(appendErrorJSON(nil, msg), '\n'))
		return
	}
	writeBytes(p.w, status, ctJSONBare, appendErrorJSON(nil, msg))
}

// finish ends a successful operation; with stream:false the last message is
// the whole answer.
func (p *progress) finish() {
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.stream {
		return
	}
	b, _ := json.Marshal(p.last)
	writeBytes(p.w, http.StatusOK, ctJSONBare, b)
}

// layerDigest is a deterministic fake layer digest for a model.
func layerDigest(name, layer string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + layer))
	return hex.EncodeToString(sum[:])
}

func (s *Server) handlePull(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.PullRequest
	if !decode(w, body, &req) {
		return
	}
	n, _, ok := nameKey(cmp.Or(req.Model, req.Name))
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	name := n.DisplayShortest()
	e := newModelEntry(name, time.Now().UTC())
	p := s.newProgress(w, r, req.Stream)
	if !s.pullSteps(p, e) {
		return
	}
	s.addModel(e)
	if p.send(api.ProgressResponse{Status: "success"}) {
		p.finish()
	}
}

// pullSteps sends the progress of downloading e, up to "writing manifest".
func (s *Server) pullSteps(p *progress, e modelEntry) bool {
	if !p.send(api.ProgressResponse{Status: "pulling manifest"}) {
		return false
	}
	layers := []struct {
		digest string
		size   int64
	}{
		{e.digest, e.size},
		{layerDigest(e.name, "template"), 1429},
		{layerDigest(e.name, "params"), 110},
	}
	for _, l := range layers {
		status := "pulling " + l.digest[:12]
		// First the size alone (completed 0 is omitted), then progress.
		for _, done := range []int64{0, l.size / 2, l.size} {
			if done == l.size/2 && l.size < 1<<20 {
				continue // small layers arrive in one step
			}
			if !p.send(api.ProgressResponse{Status: status, Digest: "sha256:" + l.digest, Total: l.size, Completed: done}) {
				return false
			}
		}
	}
	return p.send(api.ProgressResponse{Status: "verifying sha256 digest"}) &&
		p.send(api.ProgressResponse{Status: "writing manifest"})
}

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.PushRequest
	if !decode(w, body, &req) {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	if name == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	p := s.newProgress(w, r, req.Stream)
	if !p.send(api.ProgressResponse{Status: "retrieving manifest"}) {
		return
	}
	n, key, ok := nameKey(name)
	e, found := s.lookupKey(key)
	if !ok || !found {
		if !p.send(api.ProgressResponse{Status: "couldn't retrieve manifest"}) {
			return
		}
		msg := unqualified(n)
		if ok {
			msg = fmt.Sprintf("open /root/.ollama/models/manifests/%s/%s/%s/%s: no such file or directory", n.Host, n.Namespace, n.Model, n.Tag)
		}
		p.fail(http.StatusInternalServerError, msg)
		return
	}
	for _, d := range []string{e.digest, layerDigest(e.name, "template"), layerDigest(e.name, "params")} {
		if !p.send(api.ProgressResponse{Status: "pushing " + d[:12], Digest: "sha256:" + d, Total: 1429, Completed: 1429}) {
			return
		}
	}
	if p.send(api.ProgressResponse{Status: "pushing manifest"}) && p.send(api.ProgressResponse{Status: "success"}) {
		p.finish()
	}
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.CreateRequest
	if !decode(w, body, &req) {
		return
	}
	for f := range req.Files {
		if !fs.ValidPath(f) {
			writeError(w, http.StatusBadRequest, "file path must be relative")
			return
		}
	}
	n, _, ok := nameKey(cmp.Or(req.Model, req.Name))
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	e := newModelEntry(n.DisplayShortest(), time.Now().UTC())
	p := s.newProgress(w, r, req.Stream)

	switch {
	case req.From != "":
		if _, _, ok := nameKey(req.From); !ok {
			p.fail(http.StatusBadRequest, "invalid model name")
			return
		}
		base, found := s.lookup(req.From)
		if !found {
			// Ollama tries to pull the base model; the fake has no registry.
			if p.send(api.ProgressResponse{Status: "pulling manifest"}) {
				p.fail(http.StatusInternalServerError, "pull model manifest: file does not exist")
			}
			return
		}
		e.size, e.details, e.embedding = base.size, base.details, base.embedding
		e.details.ParentModel = base.name
		if !p.send(api.ProgressResponse{Status: "using existing layer sha256:" + base.digest}) {
			return
		}
	case req.Files != nil:
		if len(req.Files) == 0 {
			p.fail(http.StatusBadRequest, "no files provided to convert")
			return
		}
		if !p.send(api.ProgressResponse{Status: "parsing GGUF"}) {
			return
		}
		files := make([]string, 0, len(req.Files))
		for f := range req.Files {
			files = append(files, f)
		}
		slices.Sort(files)
		for _, f := range files {
			if !p.send(api.ProgressResponse{Status: "using existing layer " + req.Files[f]}) {
				return
			}
		}
	default:
		p.fail(http.StatusBadRequest, "neither 'from' or 'files' was specified")
		return
	}

	// One new layer per setting given (template, system, parameters).
	var extras []string
	if req.Template != "" {
		extras = append(extras, "template:"+req.Template)
	}
	if req.System != "" {
		extras = append(extras, "system:"+req.System)
	}
	if len(req.Parameters) > 0 {
		b, _ := json.Marshal(req.Parameters)
		extras = append(extras, "params:"+string(b))
	}
	for _, x := range extras {
		if !p.send(api.ProgressResponse{Status: "creating new layer sha256:" + layerDigest(e.name, x)}) {
			return
		}
	}
	if !p.send(api.ProgressResponse{Status: "writing manifest"}) {
		return
	}
	s.addModel(e)
	if p.send(api.ProgressResponse{Status: "success"}) {
		p.finish()
	}
}

func (s *Server) handleCopy(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req api.CopyRequest
	if !decode(w, body, &req) {
		return
	}
	if _, _, ok := nameKey(req.Source); !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("source %q is invalid", req.Source))
		return
	}
	dst, _, ok := nameKey(req.Destination)
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("destination %q is invalid", req.Destination))
		return
	}
	src, found := s.lookup(req.Source)
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found", req.Source))
		return
	}
	e := newModelEntry(dst.DisplayShortest(), time.Now().UTC())
	e.size, e.digest, e.details, e.embedding = src.size, src.digest, src.details, src.embedding
	s.addModel(e)
	// 200 with an empty body and no Content-Type.
}

func (s *Server) handleDelete(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req api.DeleteRequest
	if !decode(w, body, &req) {
		return
	}
	name := cmp.Or(req.Model, req.Name)
	_, key, ok := nameKey(name)
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q is invalid", name))
		return
	}
	s.mu.Lock()
	removed := s.removeLocked(key)
	s.mu.Unlock()
	if !removed {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
	}
	// 200 with an empty body.
}

var digestRE = regexp.MustCompile(`^sha256[:-][0-9a-fA-F]{64}$`)

// handleBlob is HEAD (exists?) and POST (upload) /api/blobs/:digest. Blob
// contents are hashed, not kept.
func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request, _ []byte) {
	digest := strings.TrimPrefix(r.URL.Path, "/api/blobs/")
	if !digestRE.MatchString(digest) {
		writeError(w, http.StatusBadRequest, "invalid digest format")
		return
	}
	key := strings.Replace(digest, ":", "-", 1) // one blob file per name, as on disk
	s.mu.Lock()
	exists := s.blobs[key]
	s.mu.Unlock()

	if r.Method == http.MethodHead {
		if !exists {
			// The body is not sent on HEAD, but sets Content-Length.
			writeError(w, http.StatusNotFound, fmt.Sprintf("blob %q not found", digest))
		}
		return
	}
	if exists {
		return // 200
	}
	h := sha256.New()
	if _, err := io.Copy(h, r.Body); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if got != digest {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("digest mismatch, expected %q, got %q", digest, got))
		return
	}
	s.mu.Lock()
	s.blobs[key] = true
	s.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}
