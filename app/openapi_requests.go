package app

// Documentation of the request log (requestlog.go).

func init() {
	apiSchemas["RequestRecord"] = obj(map[string]any{
		"id":                typ("integer"),
		"time":              map[string]any{"type": "string", "format": "date-time", "description": "when the request arrived"},
		"request_id":        typ("string", "the X-Request-Id of the request"),
		"who":               typ("string", `"key:<name>", "user:<username>", or empty for an anonymous request`),
		"client":            typ("string", "the client's address"),
		"method":            typ("string"),
		"path":              typ("string"),
		"model":             typ("string", "as the fleet lists it when it does; empty when the request named none"),
		"node":              typ("string", "the node that served it; empty when none did"),
		"status":            typ("integer", "the HTTP status; 499 when the client went away first"),
		"duration_ms":       typ("number"),
		"ttfb_ms":           typ("number", "time to the response headers (for a stream, the first token)"),
		"prompt_tokens":     typ("integer"),
		"completion_tokens": typ("integer"),
		"bytes":             typ("integer", "response bytes sent"),
		"error":             typ("string", "why it failed, or why its stream was cut"),
	})
	apiSchemas["RequestPage"] = obj(map[string]any{
		"count":    typ("integer", "matches up to offset+limit (not a total)"),
		"offset":   typ("integer"),
		"limit":    typ("integer"),
		"has_more": typ("boolean", "at least one more match exists after this page"),
		"results":  arr(ref("RequestRecord")),
	})
	documentAPI(apiOp{Method: "GET", Path: "/api/requests", Tag: "logs", Auth: "user",
		Summary: "the request log (inference and management requests), newest first; records appear about a second after their request ended",
		Params: []apiParam{
			{Name: "model", In: "query", Type: "string", Desc: "exact; a name the fleet lists is matched as it lists it (llama3 finds llama3:latest)"},
			{Name: "node", In: "query", Type: "string", Desc: "node name, exact"},
			{Name: "who", In: "query", Type: "string", Desc: "key:<name> or user:<username>, exact"},
			{Name: "status", In: "query", Type: "string", Desc: `a code (502), a class (4xx) or "error" (400 and above, and streams cut after their 200)`},
			{Name: "since", In: "query", Type: "string", Desc: "RFC 3339, or YYYY-MM-DD HH:MM:SS in the server's time zone; inclusive"},
			{Name: "until", In: "query", Type: "string", Desc: "as since; a bare date means the end of that day"},
			{Name: "limit", In: "query", Type: "integer", Desc: "page size, default 50, max 200"},
			pageOffset,
		},
		Resp: map[int]apiRes{200: {Desc: "a page", Schema: ref("RequestPage")}, 400: fieldErrRes,
			501: errRes("no request log is configured"), 503: errRes("the database is unavailable")}})
}
