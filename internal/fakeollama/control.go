package fakeollama

import (
	"io"
	"net/http"
	"time"
)

// Control endpoints, served only with Options.Control, let another process
// (Node.js client tests, the load benchmark) drive the fake over HTTP. They
// are not counted in Requests.
//
//	POST /_fake/faults  {"busy":true,"drop_after":2,"error_after":-1,
//	                     "liveness_delay_ms":300,"token_delay_ms":20}
//	                    absent fields are left unchanged; answers the state
//	GET  /_fake/faults  the current fault state
//	POST /_fake/reset   ClearFaults, the token delay it started with, and ResetStats
//	GET  /_fake/stats   {"requests":{"/api/chat":3,...},"active":0,"cancelled":1}
//	GET  /_fake/last?path=/api/chat
//	                    {"host":"...","headers":{...},"body":"..."} of the last
//	                    request on that path (404 if none)
const controlPrefix = "/_fake/"

type faultState struct {
	Busy            *bool  `json:"busy,omitempty"`
	DropAfter       *int   `json:"drop_after,omitempty"`
	ErrorAfter      *int   `json:"error_after,omitempty"`
	LivenessDelayMS *int64 `json:"liveness_delay_ms,omitempty"`
	TokenDelayMS    *int64 `json:"token_delay_ms,omitempty"`
}

func (s *Server) faultState() faultState {
	busy := s.busy.Load()
	drop, errAfter := int(s.dropAfter.Load()), int(s.errorAfter.Load())
	live := time.Duration(s.livenessDelay.Load()).Milliseconds()
	tok := time.Duration(s.tokenDelay.Load()).Milliseconds()
	return faultState{&busy, &drop, &errAfter, &live, &tok}
}

func (s *Server) handleControl(w http.ResponseWriter, r *http.Request) {
	switch r.Method + " " + r.URL.Path {
	case "GET /_fake/faults":
		writeJSON(w, http.StatusOK, s.faultState())
	case "POST /_fake/faults":
		var f faultState
		body, _ := io.ReadAll(r.Body)
		if !decode(w, body, &f) {
			return
		}
		if f.Busy != nil {
			s.SetBusy(*f.Busy)
		}
		if f.DropAfter != nil {
			s.SetDropAfter(*f.DropAfter)
		}
		if f.ErrorAfter != nil {
			s.SetErrorAfter(*f.ErrorAfter)
		}
		if f.LivenessDelayMS != nil {
			s.SetLivenessDelay(time.Duration(*f.LivenessDelayMS) * time.Millisecond)
		}
		if f.TokenDelayMS != nil {
			s.SetTokenDelay(time.Duration(*f.TokenDelayMS) * time.Millisecond)
		}
		writeJSON(w, http.StatusOK, s.faultState())
	case "POST /_fake/reset":
		s.ClearFaults()
		s.SetTokenDelay(s.opts.TokenDelay) // the delay it started with, which /_fake/faults may have changed
		s.ResetStats()
		writeJSON(w, http.StatusOK, s.faultState())
	case "GET /_fake/stats":
		s.statsMu.Lock()
		reqs := make(map[string]int, len(s.stats))
		for p, st := range s.stats {
			reqs[p] = st.count
		}
		s.statsMu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"requests":  reqs,
			"active":    s.Active(),
			"cancelled": s.Cancelled(),
			"models":    s.Models(),
		})
	case "GET /_fake/last":
		h, body, host := s.LastRequest(r.URL.Query().Get("path"))
		if h == nil {
			writeError(w, http.StatusNotFound, "no request on that path")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"host": host, "headers": h, "body": string(body)})
	default:
		writeError(w, http.StatusNotFound, "unknown control endpoint")
	}
}
