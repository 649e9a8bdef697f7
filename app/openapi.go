package app

import (
	"net/http"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// The OpenAPI 3 document of GET /api/schema, written by hand in Go: each
// feature registers its operations next to its routes (openapi_*.go), and
// TestOpenAPICoversEveryRoute fails when a route is served without being
// documented, or documented without being served.

// apiOp documents one operation.
type apiOp struct {
	Method  string // "GET"
	Path    string // OpenAPI form: "/api/proxy/nodes/{id}"
	Tag     string
	Summary string
	Auth    string // "", "user", "admin", "apikey"
	Params  []apiParam
	Body    any            // request body schema, nil for none
	BodyCT  string         // request content type; "" means application/json
	Resp    map[int]apiRes // by status
}

type apiParam struct {
	Name, In, Type, Desc string
	Required             bool
}

type apiRes struct {
	Desc   string
	Schema any    // nil: no body
	CT     string // "" means application/json
}

var (
	apiOpsMu sync.Mutex
	apiOps   []apiOp
)

// documentAPI adds operations to the document; call it from an init
// function in the file that registers the routes' documentation.
func documentAPI(ops ...apiOp) {
	apiOpsMu.Lock()
	defer apiOpsMu.Unlock()
	apiOps = append(apiOps, ops...)
}

// Schema helpers.
func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }
func obj(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}
func arr(items any) map[string]any { return map[string]any{"type": "array", "items": items} }
func typ(t string, desc ...string) map[string]any {
	o := map[string]any{"type": t}
	if len(desc) > 0 {
		o["description"] = desc[0]
	}
	return o
}
func nullable(t string) map[string]any { return map[string]any{"type": t, "nullable": true} }
func freeform(desc string) map[string]any {
	return map[string]any{"type": "object", "additionalProperties": true, "description": desc}
}

var (
	errRes      = func(desc string) apiRes { return apiRes{Desc: desc, Schema: ref("Error")} }
	fieldErrRes = apiRes{Desc: "invalid input, by field", Schema: ref("FieldErrors")}
	ndjson      = "application/x-ndjson"
)

var apiSchemas = map[string]any{
	"Error": obj(map[string]any{"error": typ("string")}, "error"),
	"OpenAIError": obj(map[string]any{"error": obj(map[string]any{
		"message": typ("string"), "type": typ("string"), "param": nullable("string"), "code": nullable("string")})}),
	"FieldErrors": obj(map[string]any{
		"error":  typ("string", "all problems in one line"),
		"errors": map[string]any{"type": "object", "additionalProperties": arr(typ("string"))},
	}, "error", "errors"),
	"NodeStatus": obj(map[string]any{
		"healthy":         typ("boolean"),
		"state":           map[string]any{"type": "string", "enum": []string{"active", "standby", "disabled"}},
		"latency_ms":      nullable("number"),
		"models":          arr(typ("string")),
		"loaded_models":   arr(typ("string")),
		"version":         typ("string"),
		"last_check":      map[string]any{"type": "string", "format": "date-time", "nullable": true},
		"reason":          typ("string"),
		"active_requests": typ("integer"),
	}),
	"Node": obj(map[string]any{
		"id": typ("integer"), "name": typ("string"),
		"address":    typ("string", "the normalised base URL (same as base_url)"),
		"base_url":   typ("string"),
		"port":       typ("integer"),
		"enabled":    typ("boolean", "the admin's switch: a disabled node is drained"),
		"created_at": map[string]any{"type": "string", "format": "date-time"},
		"updated_at": map[string]any{"type": "string", "format": "date-time"},
		"status":     map[string]any{"allOf": []any{ref("NodeStatus")}, "readOnly": true},
	}),
	"NodeInput": obj(map[string]any{
		"name":     typ("string", "display name; default host:port"),
		"base_url": typ("string", "http(s)://host[:port]; normalised"),
		"address":  typ("string", "upstream style: host, host:port or URL; combined with port when it has none"),
		"port":     typ("integer"),
		"enabled":  typ("boolean", "default true"),
		"active":   typ("boolean", "upstream alias of enabled"),
	}),
	"NodeList": obj(map[string]any{
		"count": typ("integer"), "next": nullable("string"), "previous": nullable("string"),
		"results": arr(ref("Node")),
	}),
	"Config": obj(map[string]any{
		"strategy":   map[string]any{"type": "string", "enum": []string{"least_active", "lowest_latency"}},
		"strategies": arr(typ("string")),
	}),
	"ProxyPullRequest": obj(map[string]any{
		"model": typ("string"), "node_id": typ("integer", "one node; omitted or 0: every enabled node"),
		"insecure": typ("boolean"), "stream": typ("boolean", "default false"),
	}, "model"),
	"PullResult": obj(map[string]any{
		"node_id": typ("integer"), "node_name": typ("string"), "node_address": typ("string"),
		"status": map[string]any{"type": "string", "enum": []string{"success", "error"}}, "message": typ("string"),
		"done": typ("boolean", "true on the summary line of a stream"), "error": typ("string", "the message again, on a failed node's summary line"),
	}),
	"ProxyPullResponse": obj(map[string]any{
		"model": typ("string"), "results": arr(ref("PullResult")), "total_nodes": typ("integer"),
	}),
	"Progress": obj(map[string]any{
		"status": typ("string"), "digest": typ("string"), "total": typ("integer"), "completed": typ("integer"),
		"error": typ("string"),
	}),
	"LogEntry": obj(map[string]any{
		"time":  map[string]any{"type": "string", "format": "date-time", "nullable": true},
		"level": typ("string"), "msg": typ("string"),
		"attrs": freeform("every other field of the JSON line"),
	}),
	"LogPage": obj(map[string]any{
		"count":     typ("integer", "matches found up to offset+limit (not a total: that would need a full scan)"),
		"offset":    typ("integer"),
		"limit":     typ("integer"),
		"has_more":  typ("boolean", "at least one more match exists after this page"),
		"truncated": typ("boolean", "present when the query timed out; results are what was found"),
		"results":   arr(ref("LogEntry")),
	}),
	"OllamaRequest":  freeform("an Ollama request body; see Ollama's API documentation"),
	"OllamaResponse": freeform("an Ollama response, streamed as NDJSON unless stream is false"),
	"OpenAIRequest":  freeform("an OpenAI-compatible request body"),
	"OpenAIResponse": freeform("an OpenAI-compatible response; SSE when stream is true"),
}

var (
	pathID      = apiParam{Name: "id", In: "path", Type: "integer", Required: true}
	pageLimit   = apiParam{Name: "limit", In: "query", Type: "integer", Desc: "page size, default and max 100"}
	pageOffset  = apiParam{Name: "offset", In: "query", Type: "integer", Desc: "default 0"}
	fieldsParam = apiParam{Name: "fields", In: "query", Type: "string", Desc: "comma-separated: only these fields of each node (e.g. id,name)"}
)

func init() {
	ollamaRoute := func(method, path, summary string) apiOp {
		return apiOp{Method: method, Path: path, Tag: "ollama", Summary: summary, Auth: "apikey",
			Body: ref("OllamaRequest"),
			Resp: map[int]apiRes{200: {Desc: "the node's answer, relayed as it streams", Schema: ref("OllamaResponse")},
				400: errRes("invalid body or no model"), 404: errRes("no node lists the model"),
				502: errRes("no node could serve the request"), 503: errRes("no healthy node")}}
	}
	openAIRoute := func(path, summary string) apiOp {
		return apiOp{Method: "POST", Path: path, Tag: "openai", Summary: summary, Auth: "apikey", Body: ref("OpenAIRequest"),
			Resp: map[int]apiRes{200: {Desc: "the node's answer", Schema: ref("OpenAIResponse")},
				400: {Desc: "invalid body", Schema: ref("OpenAIError")}, 404: {Desc: "unknown model", Schema: ref("OpenAIError")}}}
	}
	ops := []apiOp{
		{Method: "GET", Path: "/", Tag: "ollama", Summary: "liveness, as Ollama answers it",
			Resp: map[int]apiRes{200: {Desc: "Ollama is running", CT: "text/plain", Schema: typ("string")}, 503: errRes("no healthy node")}},
		{Method: "GET", Path: "/api/proxy", Tag: "proxy", Summary: "liveness (the upstream's path)",
			Resp: map[int]apiRes{200: {Desc: "Ollama is running", CT: "text/plain", Schema: typ("string")}, 503: errRes("no healthy node")}},
	}
	for _, p := range []string{"chat", "generate", "embed", "embeddings", "show"} {
		ops = append(ops, ollamaRoute("POST", "/api/"+p, "Ollama /api/"+p+", routed to the least loaded node that has the model"))
	}
	for _, p := range []string{"chat", "generate", "embed", "embeddings"} {
		ops = append(ops, ollamaRoute("POST", "/api/proxy/"+p, "the upstream's alias of /api/"+p))
	}
	ops = append(ops,
		openAIRoute("/v1/chat/completions", "OpenAI chat completions"),
		openAIRoute("/v1/completions", "OpenAI completions"),
		openAIRoute("/v1/embeddings", "OpenAI embeddings"),
		openAIRoute("/v1/responses", "OpenAI Responses API"),
		openAIRoute("/v1/messages", "Anthropic Messages API (errors in Anthropic's shape)"),
		openAIRoute("/v1/images/generations", "OpenAI image generation (Ollama's image models)"),
		openAIRoute("/v1/images/edits", "OpenAI image edits (JSON with a base64 image, as Ollama takes them)"),
		apiOp{Method: "GET", Path: "/api/tags", Tag: "ollama", Auth: "apikey", Summary: "the union of the healthy nodes' models",
			Resp: map[int]apiRes{200: {Desc: "models", Schema: obj(map[string]any{"models": arr(ref("OllamaResponse"))})}}},
		apiOp{Method: "GET", Path: "/api/proxy/tags", Tag: "proxy", Auth: "apikey", Summary: "the upstream's alias of /api/tags",
			Resp: map[int]apiRes{200: {Desc: "models", Schema: obj(map[string]any{"models": arr(ref("OllamaResponse"))})}}},
		apiOp{Method: "GET", Path: "/api/ps", Tag: "ollama", Auth: "apikey", Summary: "the union of the models loaded on the healthy nodes",
			Resp: map[int]apiRes{200: {Desc: "loaded models", Schema: obj(map[string]any{"models": arr(ref("OllamaResponse"))})}}},
		apiOp{Method: "GET", Path: "/api/version", Tag: "ollama", Auth: "apikey", Summary: "the lowest Ollama version among the healthy nodes",
			Resp: map[int]apiRes{200: {Desc: "version", Schema: obj(map[string]any{"version": typ("string")})}, 503: errRes("no healthy node")}},
		apiOp{Method: "GET", Path: "/api/status", Tag: "ollama", Auth: "apikey", Summary: "Ollama's cloud status, from the first healthy node that answers",
			Resp: map[int]apiRes{200: {Desc: "the node's answer", Schema: ref("OllamaResponse")}, 502: errRes("no node answered"), 503: errRes("no healthy node")}},
		apiOp{Method: "POST", Path: "/api/me", Tag: "ollama", Auth: "apikey", Summary: "the ollama.com user the first healthy node that answers is signed in as",
			Resp: map[int]apiRes{200: {Desc: "the node's answer", Schema: ref("OllamaResponse")}, 502: errRes("no node answered"), 503: errRes("no healthy node")}},
		apiOp{Method: "GET", Path: "/v1/models", Tag: "openai", Auth: "apikey", Summary: "models, OpenAI shape",
			Resp: map[int]apiRes{200: {Desc: "list", Schema: ref("OpenAIResponse")}}},
		apiOp{Method: "GET", Path: "/v1/models/{model}", Tag: "openai", Auth: "apikey", Summary: "one model, OpenAI shape",
			Params: []apiParam{{Name: "model", In: "path", Type: "string", Required: true, Desc: "may contain slashes"}},
			Resp:   map[int]apiRes{200: {Desc: "model", Schema: ref("OpenAIResponse")}, 404: {Desc: "unknown model", Schema: ref("OpenAIError")}}},
		apiOp{Method: "GET", Path: "/api/health", Tag: "operations", Summary: "the proxy, its dependencies and the worker's last pass",
			Resp: map[int]apiRes{200: {Desc: "ok or degraded", Schema: freeform("status, version, mode, dependencies, worker, nodes")}}},
		apiOp{Method: "GET", Path: "/api/proxy/state", Tag: "operations", Auth: "admin", Summary: "every node with its admin and observed state",
			Resp: map[int]apiRes{200: {Desc: "state", Schema: freeform("nodes plus the upstream's keyed maps")}}},
		apiOp{Method: "GET", Path: "/api/proxy/active-requests", Tag: "operations", Auth: "admin", Summary: "requests in flight per node",
			Params: []apiParam{{Name: "node_id", In: "query", Type: "integer"}},
			Resp:   map[int]apiRes{200: {Desc: "counts", Schema: freeform("nodes, total_active_requests")}, 400: errRes("invalid node_id"), 404: errRes("node not found")}},
	)
	documentAPI(ops...)

	// Management (manage*.go, pull.go).
	nodeRes := apiRes{Desc: "the node", Schema: ref("Node")}
	documentAPI(
		apiOp{Method: "GET", Path: "/api/proxy/nodes", Tag: "nodes", Auth: "user", Summary: "list nodes, by ID",
			Params: []apiParam{pageLimit, pageOffset, fieldsParam}, Resp: map[int]apiRes{200: {Desc: "a page", Schema: ref("NodeList")}}},
		apiOp{Method: "POST", Path: "/api/proxy/nodes", Tag: "nodes", Auth: "admin", Summary: "add a node; it is probed at once",
			Body: ref("NodeInput"), Resp: map[int]apiRes{201: nodeRes, 400: fieldErrRes, 409: fieldErrRes, 501: errRes("no admin store")}},
		apiOp{Method: "GET", Path: "/api/proxy/nodes/{id}", Tag: "nodes", Auth: "user", Summary: "one node",
			Params: []apiParam{pathID, fieldsParam}, Resp: map[int]apiRes{200: nodeRes, 404: errRes("node not found")}},
		apiOp{Method: "PUT", Path: "/api/proxy/nodes/{id}", Tag: "nodes", Auth: "admin", Summary: "replace a node (a name left out is derived from the URL; enabled left out is kept)",
			Params: []apiParam{pathID}, Body: ref("NodeInput"),
			Resp: map[int]apiRes{200: nodeRes, 400: fieldErrRes, 404: errRes("node not found"), 409: fieldErrRes}},
		apiOp{Method: "PATCH", Path: "/api/proxy/nodes/{id}", Tag: "nodes", Auth: "admin", Summary: "change some fields of a node (enabled: drain)",
			Params: []apiParam{pathID}, Body: ref("NodeInput"),
			Resp: map[int]apiRes{200: nodeRes, 400: fieldErrRes, 404: errRes("node not found"), 409: fieldErrRes}},
		apiOp{Method: "DELETE", Path: "/api/proxy/nodes/{id}", Tag: "nodes", Auth: "admin", Summary: "remove a node",
			Params: []apiParam{pathID}, Resp: map[int]apiRes{204: {Desc: "deleted"}, 404: errRes("node not found")}},
		apiOp{Method: "GET", Path: "/api/proxy/config", Tag: "config", Auth: "user", Summary: "runtime settings",
			Resp: map[int]apiRes{200: {Desc: "settings", Schema: ref("Config")}}},
		apiOp{Method: "PUT", Path: "/api/proxy/config", Tag: "config", Auth: "admin", Summary: "change runtime settings",
			Body: ref("Config"), Resp: map[int]apiRes{200: {Desc: "settings", Schema: ref("Config")}, 400: fieldErrRes}},
		apiOp{Method: "PATCH", Path: "/api/proxy/config", Tag: "config", Auth: "admin", Summary: "change runtime settings",
			Body: ref("Config"), Resp: map[int]apiRes{200: {Desc: "settings", Schema: ref("Config")}, 400: fieldErrRes}},
		apiOp{Method: "POST", Path: "/api/proxy/pull", Tag: "models", Auth: "admin", Summary: "pull a model on one or every enabled node",
			Body: ref("ProxyPullRequest"),
			Resp: map[int]apiRes{200: {Desc: "per-node results; with stream:true NDJSON lines of Progress plus node_id/node_name, then one PullResult (done:true) per node",
				Schema: ref("ProxyPullResponse")}, 400: errRes("model name is required / invalid node_id"), 404: errRes("node not found / no active nodes available")}},
		apiOp{Method: "POST", Path: "/api/pull", Tag: "ollama", Auth: "apikey", Summary: "pull on every healthy node, one merged progress",
			Body: ref("OllamaRequest"), Resp: map[int]apiRes{200: {Desc: "Progress lines, last {status:success} or {error}", Schema: ref("Progress"), CT: ndjson},
				400: errRes("invalid name"), 503: errRes("no healthy node")}},
		apiOp{Method: "DELETE", Path: "/api/delete", Tag: "ollama", Auth: "apikey", Summary: "delete a model on every healthy node",
			Body: ref("OllamaRequest"), Resp: map[int]apiRes{200: {Desc: "deleted on at least one node (empty body)"}, 404: errRes("no node had the model")}},
		apiOp{Method: "POST", Path: "/api/copy", Tag: "ollama", Auth: "apikey", Summary: "copy a model on every healthy node that has it",
			Body: ref("OllamaRequest"), Resp: map[int]apiRes{200: {Desc: "copied on at least one node (empty body)"}, 404: errRes("source not found")}},
		apiOp{Method: "POST", Path: "/api/create", Tag: "ollama", Auth: "apikey", Summary: "create a model on one node (the least loaded that has 'from')",
			Body: ref("OllamaRequest"), Resp: map[int]apiRes{200: {Desc: "progress, relayed", Schema: ref("Progress"), CT: ndjson}, 503: errRes("no healthy node")}},
		apiOp{Method: "POST", Path: "/api/push", Tag: "ollama", Auth: "apikey", Summary: "push a model from a node that has it",
			Body: ref("OllamaRequest"), Resp: map[int]apiRes{200: {Desc: "progress, relayed", Schema: ref("Progress"), CT: ndjson}, 404: errRes("no node has the model")}},
		apiOp{Method: "HEAD", Path: "/api/blobs/{digest}", Tag: "ollama", Auth: "apikey", Summary: "200 when every healthy node has the blob",
			Params: []apiParam{{Name: "digest", In: "path", Type: "string", Required: true}},
			Resp:   map[int]apiRes{200: {Desc: "every node has it"}, 404: {Desc: "some node lacks it"}}},
		apiOp{Method: "POST", Path: "/api/blobs/{digest}", Tag: "ollama", Auth: "apikey", Summary: "upload a blob to every healthy node",
			Params: []apiParam{{Name: "digest", In: "path", Type: "string", Required: true}},
			Body:   typ("string", "the blob's bytes"), BodyCT: "application/octet-stream",
			Resp: map[int]apiRes{201: {Desc: "stored on every node"}, 200: {Desc: "every node had it"},
				400: errRes("digest mismatch"), 502: errRes("failed on some node")}},
	)

	// Observability (observe*.go).
	documentAPI(
		apiOp{Method: "GET", Path: "/api/logs", Tag: "logs", Auth: "user", Summary: "the JSON log, newest first, over the current and rotated files",
			Params: logParams(), Resp: map[int]apiRes{200: {Desc: "a page", Schema: ref("LogPage")}, 400: fieldErrRes, 404: errRes("no log file configured")}},
		apiOp{Method: "GET", Path: "/api/logs/", Tag: "logs", Auth: "user", Summary: "the upstream's path of /api/logs",
			Params: logParams(), Resp: map[int]apiRes{200: {Desc: "a page", Schema: ref("LogPage")}, 400: fieldErrRes, 404: errRes("no log file configured")}},
		apiOp{Method: "GET", Path: "/metrics", Tag: "operations", Summary: "Prometheus metrics (public unless --metrics-private: then an API key or a login)",
			Resp: map[int]apiRes{200: {Desc: "Prometheus text format", CT: "text/plain", Schema: typ("string")}}},
		apiOp{Method: "GET", Path: "/api/schema", Tag: "operations", Summary: "this document",
			Params: []apiParam{{Name: "format", In: "query", Type: "string", Desc: "json (default) or yaml"}},
			Resp:   map[int]apiRes{200: {Desc: "OpenAPI 3 document", Schema: freeform("OpenAPI")}}},
	)
}

func logParams() []apiParam {
	return []apiParam{
		{Name: "source", In: "query", Type: "string", Desc: "proxy (application lines), access (one line per request: msg \"request\") or all (default)"},
		{Name: "level", In: "query", Type: "string", Desc: "debug, info, warn or error; a comma-separated list matches any"},
		{Name: "query", In: "query", Type: "string", Desc: "case-insensitive substring of the message and attributes"},
		{Name: "start", In: "query", Type: "string", Desc: "RFC 3339, or YYYY-MM-DD HH:MM:SS in the server's time zone; inclusive"},
		{Name: "end", In: "query", Type: "string", Desc: "as start; a bare date means the end of that day"},
		pageLimit, pageOffset,
	}
}

// openAPIDocument builds the document from the registered operations.
func openAPIDocument(version string) map[string]any {
	apiOpsMu.Lock()
	ops := append([]apiOp(nil), apiOps...)
	apiOpsMu.Unlock()
	paths := map[string]any{}
	tags := map[string]bool{}
	for _, op := range ops {
		item, _ := paths[op.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[op.Path] = item
		}
		o := map[string]any{"summary": op.Summary, "operationId": operationID(op)}
		if op.Tag != "" {
			o["tags"] = []string{op.Tag}
			tags[op.Tag] = true
		}
		switch op.Auth {
		case "user", "admin":
			o["security"] = []any{map[string]any{"bearerAuth": []string{}}, map[string]any{"cookieAuth": []string{}}}
			o["x-aivonx-role"] = op.Auth
		case "apikey":
			o["security"] = []any{map[string]any{}, map[string]any{"bearerAuth": []string{}}, map[string]any{"apiKey": []string{}}}
			o["description"] = "Open unless the deployment requires API keys (AIVONX_REQUIRE_API_KEY)."
		}
		var params []any
		for _, p := range op.Params {
			pm := map[string]any{"name": p.Name, "in": p.In, "schema": typ(p.Type)}
			if p.Required {
				pm["required"] = true
			}
			if p.Desc != "" {
				pm["description"] = p.Desc
			}
			params = append(params, pm)
		}
		if params != nil {
			o["parameters"] = params
		}
		if op.Body != nil {
			ct := op.BodyCT
			if ct == "" {
				ct = "application/json"
			}
			o["requestBody"] = map[string]any{"content": map[string]any{ct: map[string]any{"schema": op.Body}}}
		}
		resp := map[string]any{}
		for status, r := range op.Resp {
			rm := map[string]any{"description": r.Desc}
			if r.Schema != nil {
				ct := r.CT
				if ct == "" {
					ct = "application/json"
				}
				rm["content"] = map[string]any{ct: map[string]any{"schema": r.Schema}}
			}
			resp[itoa(uint64(status))] = rm
		}
		if op.Auth == "user" || op.Auth == "admin" {
			resp["401"] = map[string]any{"description": "not logged in"}
			if op.Auth == "admin" {
				resp["403"] = map[string]any{"description": "not an admin"}
			}
		}
		o["responses"] = resp
		item[strings.ToLower(op.Method)] = o
	}
	var tagList []any
	for _, t := range sortedKeys(tags) {
		tagList = append(tagList, map[string]any{"name": t})
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "Aivonx", "version": version,
			"description": "A load-balancing proxy for fleets of Ollama servers: the Ollama and OpenAI-compatible APIs, plus management."},
		"tags":  tagList,
		"paths": paths,
		"components": map[string]any{
			"schemas": apiSchemas,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{"type": "http", "scheme": "bearer", "description": "a login's access JWT, or an API key"},
				"apiKey":     map[string]any{"type": "apiKey", "in": "header", "name": "X-API-Key"},
				"cookieAuth": map[string]any{"type": "apiKey", "in": "cookie", "name": sessionCookie},
			},
		},
	}
}

func operationID(op apiOp) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(op.Method))
	for _, part := range strings.FieldsFunc(op.Path, func(r rune) bool { return r == '/' || r == '{' || r == '}' || r == '.' || r == '-' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	if strings.HasSuffix(op.Path, "/") && op.Path != "/" {
		b.WriteString("Slash")
	}
	if op.Path == "/" {
		b.WriteString("Root")
	}
	return b.String()
}

// handleSchema is GET /api/schema[?format=yaml].
func (h *Handler) handleSchema(w http.ResponseWriter, r *http.Request) {
	doc := openAPIDocument(h.cfg.Version)
	if r.URL.Query().Get("format") == "yaml" {
		b, err := yaml.Marshal(doc)
		if err != nil {
			writeErr(w, r, ollamaDialect, err)
			return
		}
		w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
		w.Write(b)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

// documentedRoutes lists "METHOD /path" for every documented operation,
// sorted, for the completeness test.
func documentedRoutes() []string {
	apiOpsMu.Lock()
	defer apiOpsMu.Unlock()
	out := make([]string, 0, len(apiOps))
	for _, op := range apiOps {
		out = append(out, op.Method+" "+op.Path)
	}
	sort.Strings(out)
	return out
}
