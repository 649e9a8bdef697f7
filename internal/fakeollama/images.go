package fakeollama

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// handleOAIImageGenerations is /v1/images/generations: Ollama's middleware
// checks prompt, then model, then runs /api/generate and answers one JSON
// document once the image is done. Here every generating model "draws":
// a PNG of the requested size (at most 64×64), one colour per model.
func (s *Server) handleOAIImageGenerations(w http.ResponseWriter, r *http.Request, body []byte) {
	var req openai.ImageGenerationRequest
	if !decodeOAI(w, body, &req) {
		return
	}
	if req.Prompt == "" {
		writeOAIRequestError(w, "prompt is required")
		return
	}
	if req.Model == "" {
		writeOAIRequestError(w, "model is required")
		return
	}
	s.drawImage(w, openai.FromImageGenerationRequest(req))
}

// handleOAIImageEdits is /v1/images/edits: as generations, with a required
// base64 image (JSON, not the multipart form of OpenAI's own API).
func (s *Server) handleOAIImageEdits(w http.ResponseWriter, r *http.Request, body []byte) {
	var req openai.ImageEditRequest
	if !decodeOAI(w, body, &req) {
		return
	}
	switch {
	case req.Prompt == "":
		writeOAIRequestError(w, "prompt is required")
		return
	case req.Model == "":
		writeOAIRequestError(w, "model is required")
		return
	case req.Image == "":
		writeOAIRequestError(w, "image is required")
		return
	}
	genReq, err := openai.FromImageEditRequest(req)
	if err != nil {
		writeOAIRequestError(w, err.Error())
		return
	}
	s.drawImage(w, genReq)
}

func (s *Server) drawImage(w http.ResponseWriter, req api.GenerateRequest) {
	if _, rerr := s.prepareGenerate(&req); rerr != nil {
		writeOAIError(w, rerr.status, rerr.msg)
		return
	}
	width, height := clampSide(req.Width), clampSide(req.Height)
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	shade := uint8(len(req.Model) * 37)
	for y := range height {
		for x := range width {
			img.Set(x, y, color.RGBA{R: shade, G: uint8(x * 4), B: uint8(y * 4), A: 255})
		}
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	writeOAI(w, http.StatusOK, openai.ImageGenerationResponse{
		Created: time.Now().Unix(),
		Data:    []openai.ImageURLOrData{{B64JSON: base64.StdEncoding.EncodeToString(buf.Bytes())}},
	})
}

// clampSide is an image side in pixels: 16 when unset, else
// at most 64 so that a test's image stays small.
func clampSide(v int32) int {
	if v <= 0 {
		return 16
	}
	return int(min(v, 64))
}
