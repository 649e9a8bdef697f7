package fakeollama

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// rawVector is the "model output" for text: dims deterministic floats in
// [-1, 1), not normalized (that is what legacy /api/embeddings returns).
func rawVector(text string, dims int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	x := h.Sum64()
	v := make([]float32, dims)
	for i := range v {
		// splitmix64
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v[i] = float32(z>>40)/float32(1<<23) - 1
	}
	return v
}

// normalize scales v to unit length in place, as Ollama's EmbedHandler does.
func normalize(v []float32) []float32 {
	var sum float32
	for _, x := range v {
		sum += x * x
	}
	norm := float32(1.0 / max(math.Sqrt(float64(sum)), 1e-12))
	for i := range v {
		v[i] *= norm
	}
	return v
}

// Vector is the embedding /api/embed and /v1/embeddings return for text with
// dims dimensions (the server's EmbeddingDims unless the request asked for
// fewer): deterministic and L2-normalized.
func Vector(text string, dims int) []float32 {
	return normalize(rawVector(text, dims))
}

// embedInput parses EmbedRequest.Input like Ollama: a string (empty means no
// input) or an array of strings.
func embedInput(in any) ([]string, bool) {
	switch v := in.(type) {
	case nil:
		return nil, true
	case string:
		if v == "" {
			return nil, true
		}
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			str, ok := x.(string)
			if !ok {
				return nil, false
			}
			out = append(out, str)
		}
		return out, true
	}
	return nil, false
}

// embed validates and computes an /api/embed request. The error wording for
// a missing model differs from chat's ("model \"x\" not found, try pulling it
// first"), as in Ollama.
func (s *Server) embed(req *api.EmbedRequest) (*api.EmbedResponse, *reqError) {
	start := time.Now()
	input, ok := embedInput(req.Input)
	if !ok {
		return nil, &reqError{http.StatusBadRequest, "invalid input type"}
	}
	n, key, ok := nameKey(req.Model)
	if !ok {
		return nil, &reqError{http.StatusInternalServerError, unqualified(n)}
	}
	if _, ok := s.lookupKey(key); !ok {
		return nil, &reqError{http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model)}
	}
	if s.busy.Load() {
		return nil, &reqError{http.StatusServiceUnavailable, msgBusy}
	}
	if len(input) == 0 {
		return &api.EmbedResponse{Model: req.Model, Embeddings: [][]float32{}}, nil
	}
	resp := &api.EmbedResponse{Model: req.Model, Embeddings: make([][]float32, len(input))}
	for i, text := range input {
		v := Vector(text, s.opts.EmbeddingDims)
		if d := req.Dimensions; d > 0 && d < len(v) {
			v = normalize(v[:d])
		}
		resp.Embeddings[i] = v
		resp.PromptEvalCount += countTokens(text)
	}
	resp.LoadDuration = 500 * time.Microsecond
	resp.TotalDuration = resp.LoadDuration + max(time.Since(start), time.Microsecond)
	return resp, nil
}

func (s *Server) handleEmbed(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req api.EmbedRequest
	if !decode(w, body, &req) {
		return
	}
	resp, rerr := s.embed(&req)
	if rerr != nil {
		writeError(w, rerr.status, rerr.msg)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleEmbeddings is the legacy endpoint: one prompt, float64 values, not
// normalized.
func (s *Server) handleEmbeddings(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req api.EmbeddingRequest
	if !decode(w, body, &req) {
		return
	}
	_, key, ok := nameKey(req.Model)
	if !ok {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	if _, ok := s.lookupKey(key); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		return
	}
	if s.busy.Load() {
		writeError(w, http.StatusServiceUnavailable, msgBusy)
		return
	}
	resp := api.EmbeddingResponse{Embedding: []float64{}}
	if req.Prompt != "" {
		for _, x := range rawVector(req.Prompt, s.opts.EmbeddingDims) {
			resp.Embedding = append(resp.Embedding, float64(x))
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleOAIEmbeddings(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req openai.EmbedRequest
	if !decodeOAI(w, body, &req) {
		return
	}
	if req.EncodingFormat != "" && !strings.EqualFold(req.EncodingFormat, "float") && !strings.EqualFold(req.EncodingFormat, "base64") {
		writeOAIRequestError(w, fmt.Sprintf("Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64'].", req.EncodingFormat))
		return
	}
	if req.Input == "" {
		req.Input = []any{""}
	}
	if req.Input == nil {
		writeOAIRequestError(w, "invalid input")
		return
	}
	if v, ok := req.Input.([]any); ok && len(v) == 0 {
		writeOAIRequestError(w, "invalid input")
		return
	}
	resp, rerr := s.embed(&api.EmbedRequest{Model: req.Model, Input: req.Input, Dimensions: req.Dimensions})
	if rerr != nil {
		writeOAIError(w, rerr.status, rerr.msg)
		return
	}
	list := openai.EmbeddingList{
		Object: "list",
		Model:  req.Model,
		Usage:  openai.EmbeddingUsage{PromptTokens: resp.PromptEvalCount, TotalTokens: resp.PromptEvalCount},
	}
	for i, e := range resp.Embeddings {
		var emb any = e
		if strings.EqualFold(req.EncodingFormat, "base64") {
			emb = floatsToBase64(e)
		}
		list.Data = append(list.Data, openai.Embedding{Object: "embedding", Embedding: emb, Index: i})
	}
	writeOAI(w, http.StatusOK, list)
}

// floatsToBase64 is base64 of the little-endian float32s, as Ollama (and the
// OpenAI API) encode encoding_format "base64".
func floatsToBase64(v []float32) string {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, v)
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}
