package app

// Documentation of the account, API key and web UI routes (auth*.go,
// accounts*.go, ui.go). The owners of those routes refine these entries.

func init() {
	login := obj(map[string]any{
		"username": typ("string"), "password": typ("string"),
		"account": typ("string", "alias of username"), "passwd": typ("string", "alias of password"),
	})
	pair := obj(map[string]any{"access": typ("string", "JWT"), "refresh": typ("string", "JWT")})
	me := obj(map[string]any{"id": typ("integer"), "username": typ("string"), "role": typ("string")})
	user := freeform("a user: id, username, role, created_at")
	key := freeform("an API key: id, name, prefix, rpm_limit, usage, revoked; key (the plaintext) only in the creation answer")
	idParam := []apiParam{pathID}
	documentAPI(
		apiOp{Method: "POST", Path: "/api/account/login", Tag: "account", Summary: "log in: a JWT pair (rate limited)",
			Body: login, Resp: map[int]apiRes{200: {Desc: "tokens", Schema: pair}, 400: errRes("missing credentials"),
				401: errRes("invalid credentials"), 429: errRes("too many attempts")}},
		apiOp{Method: "POST", Path: "/api/account/refresh", Tag: "account", Summary: "a new pair for a refresh token",
			Body: obj(map[string]any{"refresh": typ("string")}, "refresh"), Resp: map[int]apiRes{200: {Desc: "tokens", Schema: pair}, 401: errRes("invalid token")}},
		apiOp{Method: "POST", Path: "/api/account/session", Tag: "account", Summary: "log a browser in: sets the session cookie",
			Body: login, Resp: map[int]apiRes{200: {Desc: "who logged in", Schema: me}, 401: errRes("invalid credentials"), 403: errRes("cross-origin request refused")}},
		apiOp{Method: "POST", Path: "/api/account/logout", Tag: "account", Summary: "log out everywhere: voids every session and token of the user who sends it (cookie or bearer token), and clears the session cookie",
			Resp: map[int]apiRes{204: {Desc: "logged out"}, 403: errRes("cross-origin request refused")}},
		apiOp{Method: "GET", Path: "/api/account/me", Tag: "account", Auth: "user", Summary: "who is logged in",
			Resp: map[int]apiRes{200: {Desc: "the user", Schema: me}}},
		apiOp{Method: "GET", Path: "/api/account/setup", Tag: "account", Summary: "whether a first admin must be created",
			Resp: map[int]apiRes{200: {Desc: "setup state", Schema: freeform("needs_admin and a hint")}}},
		apiOp{Method: "GET", Path: "/api/account/users", Tag: "account", Auth: "admin", Summary: "list users",
			Resp: map[int]apiRes{200: {Desc: "users", Schema: arr(user)}}},
		apiOp{Method: "POST", Path: "/api/account/users", Tag: "account", Auth: "admin", Summary: "create a user",
			Body: obj(map[string]any{"username": typ("string"), "password": typ("string"), "role": typ("string", "admin or viewer")}),
			Resp: map[int]apiRes{201: {Desc: "the user", Schema: user}, 400: errRes("invalid input"), 409: errRes("username taken")}},
		apiOp{Method: "PATCH", Path: "/api/account/users/{id}", Tag: "account", Auth: "admin", Summary: "change a password or a role",
			Params: idParam, Body: obj(map[string]any{"password": typ("string"), "role": typ("string")}),
			Resp: map[int]apiRes{200: {Desc: "the user", Schema: user}, 400: errRes("invalid input"), 404: errRes("user not found")}},
		apiOp{Method: "DELETE", Path: "/api/account/users/{id}", Tag: "account", Auth: "admin", Summary: "delete a user (never the last admin)",
			Params: idParam, Resp: map[int]apiRes{204: {Desc: "deleted"}, 404: errRes("user not found")}},
		apiOp{Method: "GET", Path: "/api/keys", Tag: "keys", Auth: "admin", Summary: "list API keys with their usage",
			Resp: map[int]apiRes{200: {Desc: "keys", Schema: arr(key)}}},
		apiOp{Method: "POST", Path: "/api/keys", Tag: "keys", Auth: "admin", Summary: "create an API key; the plaintext is shown once",
			Body: obj(map[string]any{"name": typ("string"), "rpm_limit": typ("integer", "requests per minute; 0: unlimited")}),
			Resp: map[int]apiRes{201: {Desc: "the key, with its plaintext", Schema: key}, 400: errRes("invalid input")}},
		apiOp{Method: "DELETE", Path: "/api/keys/{id}", Tag: "keys", Auth: "admin", Summary: "revoke an API key",
			Params: idParam, Resp: map[int]apiRes{204: {Desc: "revoked"}, 404: errRes("key not found")}},
	)

	html := apiRes{Desc: "an HTML page", CT: "text/html", Schema: typ("string")}
	documentAPI(
		apiOp{Method: "GET", Path: "/ui", Tag: "ui", Summary: "redirect to /ui/", Resp: map[int]apiRes{301: {Desc: "to /ui/"}}},
		apiOp{Method: "GET", Path: "/ui/static/{file}", Tag: "ui", Summary: "the UI's embedded files",
			Params: []apiParam{{Name: "file", In: "path", Type: "string", Required: true}},
			Resp:   map[int]apiRes{200: {Desc: "a file", CT: "application/octet-stream", Schema: typ("string")}, 404: {Desc: "no such file"}}},
	)
	seen := map[string]bool{}
	for _, p := range uiPages {
		if !seen[p.Path] {
			seen[p.Path] = true
			documentAPI(apiOp{Method: "GET", Path: p.Path, Tag: "ui", Summary: "web UI: " + p.Title, Resp: map[int]apiRes{200: html}})
		}
	}
	if !seen["/ui/"] {
		documentAPI(apiOp{Method: "GET", Path: "/ui/", Tag: "ui", Summary: "web UI", Resp: map[int]apiRes{200: html, 404: html}})
	}
}
