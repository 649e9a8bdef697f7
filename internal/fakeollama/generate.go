package fakeollama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// vocabulary is cycled through to build answers.
var vocabulary = [...]string{"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."}

// Token is the i-th token (0-based) of every generated answer.
func Token(i int) string { return vocabulary[i%len(vocabulary)] }

// Answer is the full text of an answer of n tokens.
func Answer(n int) string {
	var sb strings.Builder
	for i := range n {
		sb.WriteString(Token(i))
	}
	return sb.String()
}

// genKind selects the wire format of a generation.
type genKind uint8

const (
	kindChat          genKind = iota // /api/chat
	kindGenerate                     // /api/generate
	kindOAIChat                      // /v1/chat/completions
	kindOAICompletion                // /v1/completions
)

// gen describes one generation that passed validation.
type gen struct {
	kind         genKind
	model        string // echoed exactly as the request spelled it
	stream       bool
	n            int    // tokens to produce
	reason       string // done_reason / finish_reason
	promptTokens int
	raw          bool // generate: no "context" in the final line
	includeUsage bool // /v1: stream_options.include_usage
	id           string
	loadOnly     bool // no runner involved: no metrics, no faults
}

type metrics struct {
	total, load, promptEval, eval time.Duration
	promptCount, evalCount        int
}

func (m metrics) appendTo(b []byte) []byte {
	if m.total == 0 {
		return b
	}
	b = appendKeyInt(b, "total_duration", int64(m.total))
	b = appendKeyInt(b, "load_duration", int64(m.load))
	b = appendKeyInt(b, "prompt_eval_count", int64(m.promptCount))
	b = appendKeyInt(b, "prompt_eval_duration", int64(m.promptEval))
	b = appendKeyInt(b, "eval_count", int64(m.evalCount))
	return appendKeyInt(b, "eval_duration", int64(m.eval))
}

// appendNative appends one /api/chat or /api/generate object (no newline).
// done=false lines carry only content; the done line carries reason and
// metrics, and for generate the token context.
func (g *gen) appendNative(b []byte, content string, done bool, m metrics) []byte {
	b = append(b, `{"model":`...)
	b = appendJSONString(b, g.model)
	b = append(b, `,"created_at":`...)
	b = appendTime(b, time.Now().UTC())
	if g.kind == kindChat {
		b = append(b, `,"message":{"role":"assistant","content":`...)
		b = appendJSONString(b, content)
		b = append(b, '}')
	} else {
		b = append(b, `,"response":`...)
		b = appendJSONString(b, content)
	}
	if !done {
		return append(b, `,"done":false}`...)
	}
	b = append(b, `,"done":true,"done_reason":`...)
	b = appendJSONString(b, g.reason)
	if g.kind == kindGenerate && !g.raw && !g.loadOnly {
		// Token ids of prompt+answer, as Ollama's Tokenize returns them.
		b = append(b, `,"context":[`...)
		for i := range m.promptCount + m.evalCount {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(100+i%32000), 10)
		}
		b = append(b, ']')
	}
	b = m.appendTo(b)
	return append(b, '}')
}

// appendChunk appends one SSE event for /v1 streams. reason "" gives
// "finish_reason":null.
func (g *gen) appendChunk(b []byte, model, content, reason string) []byte {
	b = append(b, `data: {"id":`...)
	b = appendJSONString(b, g.id)
	if g.kind == kindOAIChat {
		b = append(b, `,"object":"chat.completion.chunk","created":`...)
		b = strconv.AppendInt(b, time.Now().Unix(), 10)
		b = append(b, `,"model":`...)
		b = appendJSONString(b, model)
		b = append(b, `,"system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":`...)
		b = appendJSONString(b, content)
		b = append(b, `},"finish_reason":`...)
		b = appendReason(b, reason)
		b = append(b, `}]}`...)
	} else {
		// CompletionChunk has choices before model, and with include_usage
		// every chunk carries a zero usage object.
		b = append(b, `,"object":"text_completion","created":`...)
		b = strconv.AppendInt(b, time.Now().Unix(), 10)
		b = append(b, `,"choices":[{"text":`...)
		b = appendJSONString(b, content)
		b = append(b, `,"index":0,"finish_reason":`...)
		b = appendReason(b, reason)
		b = append(b, `}],"model":`...)
		b = appendJSONString(b, model)
		b = append(b, `,"system_fingerprint":"fp_ollama"`...)
		if g.includeUsage {
			b = append(b, `,"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`...)
		}
		b = append(b, '}')
	}
	return append(b, "\n\n"...)
}

// appendUsageChunk appends the include_usage event sent after the last chunk.
func (g *gen) appendUsageChunk(b []byte, m metrics) []byte {
	b = append(b, `data: {"id":`...)
	b = appendJSONString(b, g.id)
	if g.kind == kindOAIChat {
		b = append(b, `,"object":"chat.completion.chunk","created":`...)
		b = strconv.AppendInt(b, time.Now().Unix(), 10)
		b = append(b, `,"model":`...)
		b = appendJSONString(b, g.model)
		b = append(b, `,"system_fingerprint":"fp_ollama","choices":[]`...)
	} else {
		b = append(b, `,"object":"text_completion","created":`...)
		b = strconv.AppendInt(b, time.Now().Unix(), 10)
		b = append(b, `,"choices":[],"model":`...)
		b = appendJSONString(b, g.model)
		b = append(b, `,"system_fingerprint":"fp_ollama"`...)
	}
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(m.promptCount), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(m.evalCount), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(m.promptCount+m.evalCount), 10)
	return append(b, "}}\n\n"...)
}

func appendReason(b []byte, reason string) []byte {
	if reason == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, reason)
}

// run produces the answer, one flushed line per token when streaming, and
// applies the drop/error faults, the gate and the token delay.
func (s *Server) run(w http.ResponseWriter, r *http.Request, g *gen) {
	start := time.Now()
	s.active.Add(1)
	defer s.active.Add(-1)

	dropAt, errAt := -1, -1
	if !g.loadOnly {
		dropAt, errAt = int(s.dropAfter.Load()), int(s.errorAfter.Load())
	}
	ctx := r.Context()
	rc := http.NewResponseController(w)
	bp := bufPool.Get().(*[]byte)
	defer func() { bufPool.Put(bp) }()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	var content []byte // stream:false accumulates here
	started := false
	for i := 0; ; i++ {
		if dropAt >= 0 && i == min(dropAt, g.n) {
			// Like a killed server: the connection closes mid-body with
			// no final line and no chunked terminator.
			panic(http.ErrAbortHandler)
		}
		if errAt >= 0 && i == min(errAt, g.n) {
			s.failRun(w, rc, g, started, *bp)
			return
		}
		if i == g.n {
			break
		}
		if !s.waitToken(r, &timer) {
			s.cancelled.Add(1)
			return
		}
		tok := Token(i)
		if !g.stream {
			content = append(content, tok...)
			continue
		}
		if !started {
			started = true
			s.startStream(w, g)
		}
		b := (*bp)[:0]
		if g.kind == kindChat || g.kind == kindGenerate {
			b = append(g.appendNative(b, tok, false, metrics{}), '\n')
		} else {
			b = g.appendChunk(b, g.model, tok, "")
		}
		*bp = b
		if _, err := w.Write(b); err != nil || rc.Flush() != nil {
			s.cancelled.Add(1)
			return
		}
	}
	if ctx.Err() != nil {
		s.cancelled.Add(1)
		return
	}

	var m metrics
	if !g.loadOnly {
		m = metrics{
			load:        500 * time.Microsecond,
			promptEval:  time.Duration(g.promptTokens) * 50 * time.Microsecond,
			eval:        max(time.Since(start), time.Duration(g.n)*time.Microsecond, time.Nanosecond),
			promptCount: g.promptTokens,
			evalCount:   g.n,
		}
		m.total = m.load + m.promptEval + m.eval
	}

	b := (*bp)[:0]
	switch {
	case g.kind == kindChat || g.kind == kindGenerate:
		if g.stream && !g.loadOnly {
			if !started {
				s.startStream(w, g)
			}
			b = append(g.appendNative(b, "", true, m), '\n')
		} else {
			// stream:false, and the load/unload answers, are one c.JSON.
			b = g.appendNative(b, string(content), true, m)
			w.Header()["Content-Type"] = []string{ctJSON}
		}
	case g.stream:
		if !started {
			s.startStream(w, g)
		}
		b = g.appendChunk(b, g.model, "", g.reason)
		if g.includeUsage {
			b = g.appendUsageChunk(b, m)
		}
		b = append(b, "data: [DONE]\n\n"...)
	default:
		*bp = b
		writeOAI(w, http.StatusOK, g.completion(string(content), m))
		return
	}
	*bp = b
	_, _ = w.Write(b)
}

// startStream sends the 200 header of a stream.
func (s *Server) startStream(w http.ResponseWriter, g *gen) {
	ct := ctNDJSON
	if g.kind == kindOAIChat || g.kind == kindOAICompletion {
		ct = ctSSE
	}
	w.Header()["Content-Type"] = []string{ct}
	w.WriteHeader(http.StatusOK)
}

// failRun reports a runner crash the way Ollama does at that point.
func (s *Server) failRun(w http.ResponseWriter, rc *http.ResponseController, g *gen, started bool, buf []byte) {
	native := g.kind == kindChat || g.kind == kindGenerate
	switch {
	case !started && native && g.stream:
		// streamResponse: error before any byte, Content-Type without charset.
		writeBytes(w, http.StatusInternalServerError, ctJSONBare, appendErrorJSON(buf[:0], msgRunnerCrash))
	case !started && native:
		writeError(w, http.StatusInternalServerError, msgRunnerCrash)
	case !started:
		writeOAIError(w, http.StatusInternalServerError, msgRunnerCrash)
	case native:
		// json.Encoder: trailing newline, body ends cleanly.
		_, _ = w.Write(append(appendErrorJSON(buf[:0], msgRunnerCrash), '\n'))
		_ = rc.Flush()
	default:
		// The /v1 writers re-parse {"error":...} as an empty response: one
		// empty chunk with "model":"", and no [DONE].
		_, _ = w.Write(g.appendChunk(buf[:0], "", "", ""))
		_ = rc.Flush()
	}
}

// waitToken waits out the token delay and the gate; false if the client left.
func (s *Server) waitToken(r *http.Request, timer **time.Timer) bool {
	done := r.Context().Done()
	if d := time.Duration(s.tokenDelay.Load()); d > 0 {
		if *timer == nil {
			*timer = time.NewTimer(d)
		} else {
			(*timer).Reset(d)
		}
		select {
		case <-(*timer).C:
		case <-done:
			return false
		}
	}
	if gate := s.opts.Gate; gate != nil {
		select {
		case <-gate:
		case <-done:
			return false
		}
	}
	return r.Context().Err() == nil
}

// completion is the stream:false body of /v1/chat/completions or
// /v1/completions.
func (g *gen) completion(content string, m metrics) any {
	now := time.Now().UTC().Unix()
	var reason *string
	if g.reason != "" {
		reason = &g.reason
	}
	usage := openai.Usage{PromptTokens: m.promptCount, CompletionTokens: m.evalCount, TotalTokens: m.promptCount + m.evalCount}
	if g.kind == kindOAIChat {
		return openai.ChatCompletion{
			Id: g.id, Object: "chat.completion", Created: now, Model: g.model, SystemFingerprint: "fp_ollama",
			Choices: []openai.Choice{{Index: 0, Message: openai.Message{Role: "assistant", Content: content}, FinishReason: reason}},
			Usage:   usage,
		}
	}
	return openai.Completion{
		Id: g.id, Object: "text_completion", Created: now, Model: g.model, SystemFingerprint: "fp_ollama",
		Choices: []openai.CompleteChunkChoice{{Text: content, Index: 0, FinishReason: reason}},
		Usage:   usage,
	}
}

// ---- request handling ----

// countTokens is the fake tokenizer: one token per word, at least one.
func countTokens(s string) int {
	return max(len(strings.Fields(s)), 1)
}

// answerLength applies options.num_predict to the configured answer length.
func (s *Server) answerLength(opts map[string]any) (int, string) {
	var np float64
	switch v := opts["num_predict"].(type) {
	case float64:
		np = v
	case int:
		np = float64(v)
	case json.Number:
		np, _ = v.Float64()
	}
	if np > 0 && int(np) < s.opts.Tokens {
		return int(np), "length"
	}
	return s.opts.Tokens, "stop"
}

func isZeroKeepAlive(d *api.Duration) bool { return d != nil && d.Duration == 0 }

// reqError is an error answer decided before any byte was sent.
type reqError struct {
	status int
	msg    string
}

// prepareChat validates a chat request like Ollama's ChatHandler, in the same
// order, and returns the generation to run.
func (s *Server) prepareChat(req *api.ChatRequest) (*gen, *reqError) {
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		return nil, &reqError{http.StatusBadRequest, "top_logprobs must be between 0 and 20"}
	}
	_, key, ok := nameKey(req.Model)
	if !ok {
		return nil, &reqError{http.StatusBadRequest, "model is required"}
	}
	e, ok := s.lookupKey(key)
	if !ok {
		return nil, &reqError{http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model)}
	}
	g := &gen{kind: kindChat, model: req.Model, stream: req.Stream == nil || *req.Stream}
	if len(req.Messages) == 0 && isZeroKeepAlive(req.KeepAlive) {
		g.loadOnly, g.reason = true, "unload"
		return g, nil
	}
	if req.Think.Bool() {
		return nil, &reqError{http.StatusBadRequest, fmt.Sprintf("%q does not support thinking", req.Model)}
	}
	if e.embedding {
		return nil, &reqError{http.StatusBadRequest, fmt.Sprintf("%q does not support chat", req.Model)}
	}
	if s.busy.Load() {
		return nil, &reqError{http.StatusServiceUnavailable, msgBusy}
	}
	if len(req.Messages) == 0 {
		g.loadOnly, g.reason = true, "load"
		return g, nil
	}
	for _, m := range req.Messages {
		g.promptTokens += countTokens(m.Content)
	}
	g.n, g.reason = s.answerLength(req.Options)
	return g, nil
}

// prepareGenerate validates a generate request like Ollama's GenerateHandler.
func (s *Server) prepareGenerate(req *api.GenerateRequest) (*gen, *reqError) {
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		return nil, &reqError{http.StatusBadRequest, "top_logprobs must be between 0 and 20"}
	}
	// Unlike chat, an empty or invalid name is a 404 here.
	e, ok := s.lookup(req.Model)
	if !ok {
		return nil, &reqError{http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model)}
	}
	g := &gen{kind: kindGenerate, model: req.Model, stream: req.Stream == nil || *req.Stream, raw: req.Raw}
	if req.Prompt == "" && isZeroKeepAlive(req.KeepAlive) {
		g.loadOnly, g.reason = true, "unload"
		return g, nil
	}
	if req.Raw && (req.Template != "" || req.System != "" || len(req.Context) > 0) {
		return nil, &reqError{http.StatusBadRequest, "raw mode does not support template, system, or context"}
	}
	if req.Think.Bool() {
		return nil, &reqError{http.StatusBadRequest, fmt.Sprintf("%q does not support thinking", req.Model)}
	}
	if e.embedding {
		return nil, &reqError{http.StatusBadRequest, fmt.Sprintf("%q does not support generate", req.Model)}
	}
	if s.busy.Load() {
		return nil, &reqError{http.StatusServiceUnavailable, msgBusy}
	}
	if req.Prompt == "" {
		g.loadOnly, g.reason = true, "load"
		return g, nil
	}
	g.promptTokens = countTokens(req.System) + countTokens(req.Prompt) + len(req.Context)
	g.n, g.reason = s.answerLength(req.Options)
	return g, nil
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.ChatRequest
	if !decode(w, body, &req) {
		return
	}
	g, rerr := s.prepareChat(&req)
	if rerr != nil {
		writeError(w, rerr.status, rerr.msg)
		return
	}
	s.run(w, r, g)
}

func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request, body []byte) {
	var req api.GenerateRequest
	if !decode(w, body, &req) {
		return
	}
	g, rerr := s.prepareGenerate(&req)
	if rerr != nil {
		writeError(w, rerr.status, rerr.msg)
		return
	}
	s.run(w, r, g)
}

// ---- /v1 ----

// writeOAI answers like the /v1 response writers: json.Encoder (trailing
// newline) and Content-Type application/json.
func writeOAI(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		writeOAIError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBytes(w, status, ctJSONBare, buf.Bytes())
}

// writeOAIError is an error from the native handler seen through the /v1
// writers: the type is always api_error, whatever the status.
func writeOAIError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(openai.ErrorResponse{Error: openai.Error{Message: msg, Type: "api_error"}})
	writeBytes(w, status, ctJSONBare, append(b, '\n'))
}

// writeOAIRequestError is a 400 from the /v1 middleware itself (bad JSON,
// bad fields): gin's c.JSON with type invalid_request_error.
func writeOAIRequestError(w http.ResponseWriter, msg string) {
	b, _ := json.Marshal(openai.NewError(http.StatusBadRequest, msg))
	writeBytes(w, http.StatusBadRequest, ctJSON, b)
}

func decodeOAI(w http.ResponseWriter, body []byte, v any) bool {
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(v); err != nil {
		writeOAIRequestError(w, err.Error())
		return false
	}
	return true
}

func (s *Server) handleOAIChat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req openai.ChatCompletionRequest
	if !decodeOAI(w, body, &req) {
		return
	}
	if len(req.Messages) == 0 {
		writeOAIRequestError(w, "[] is too short - 'messages'")
		return
	}
	chatReq, err := openai.FromChatRequest(req)
	if err != nil {
		writeOAIRequestError(w, err.Error())
		return
	}
	g, rerr := s.prepareChat(chatReq)
	if rerr != nil {
		writeOAIError(w, rerr.status, rerr.msg)
		return
	}
	g.kind = kindOAIChat
	g.id = "chatcmpl-" + strconv.Itoa(rand.IntN(999))
	g.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	s.run(w, r, g)
}

func (s *Server) handleOAICompletions(w http.ResponseWriter, r *http.Request, body []byte) {
	var req openai.CompletionRequest
	if !decodeOAI(w, body, &req) {
		return
	}
	genReq, err := openai.FromCompleteRequest(req)
	if err != nil {
		writeOAIRequestError(w, err.Error())
		return
	}
	g, rerr := s.prepareGenerate(&genReq)
	if rerr != nil {
		writeOAIError(w, rerr.status, rerr.msg)
		return
	}
	g.kind = kindOAICompletion
	g.id = "cmpl-" + strconv.Itoa(rand.IntN(999))
	g.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	s.run(w, r, g)
}
