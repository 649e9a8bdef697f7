package fleet

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Node is an Ollama server as an admin configured it. It is owned by the
// store (the embedded store or Postgres); health checks never change it.
//
// Its JSON (what `aivonx nodes list --json` prints) uses the management
// API's field names.
type Node struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	// BaseURL is normalised by [NormalizeURL] when written: scheme, host and
	// port, no path, no trailing slash.
	BaseURL string `json:"base_url"`
	// Enabled is the admin's switch: a disabled node is drained (gets no new
	// requests) whatever its health.
	Enabled   bool      `json:"enabled"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Validate checks the fields an admin supplies and normalises BaseURL in
// place. It returns a *ValidationError naming the first bad field.
func (n *Node) Validate() error {
	u, err := NormalizeURL(n.BaseURL)
	if err != nil {
		return err
	}
	n.BaseURL = u
	n.Name = strings.TrimSpace(n.Name)
	if n.Name == "" {
		n.Name = DefaultName(u)
	}
	if len(n.Name) > 100 {
		return &ValidationError{Field: "name", Msg: "must be at most 100 characters"}
	}
	if !Printable(n.Name) {
		return &ValidationError{Field: "name", Msg: "must not contain control characters"}
	}
	return nil
}

// DefaultName derives a display name from a normalised base URL: its host
// and port.
func DefaultName(baseURL string) string {
	if u, err := url.Parse(baseURL); err == nil && u.Host != "" {
		return u.Host
	}
	return baseURL
}

// DefaultPort is Ollama's port, added when an http address names none.
const DefaultPort = 11434

// NormalizeURL turns what an admin typed ("gpu-1", "gpu-1:11434",
// "http://10.0.0.5/", "https://h:8443") into the canonical base URL used
// everywhere: an http or https scheme, a host, an explicit port and nothing
// else. It fixes the upstream's rule, which left "httpd-box" without a
// scheme and appended ports after paths. It returns a *ValidationError for
// anything that is not a plain server address.
func NormalizeURL(raw string) (string, error) {
	invalid := func(msg string) (string, error) {
		return "", &ValidationError{Field: "base_url", Msg: msg}
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		return invalid("is required")
	}
	if len(s) > 2048 {
		return invalid("is too long")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid("is not a valid URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return invalid("scheme must be http or https")
	}
	if u.User != nil {
		return invalid("must not contain credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return invalid("must be a server address without a path or query")
	}
	host := u.Hostname()
	if host == "" {
		return invalid("needs a host")
	}
	if len(host) > 253 {
		return invalid("host is longer than a DNS name can be (253 characters)")
	}
	if !validHost(host) {
		return invalid("host must be a DNS name or an IP address (ASCII; an international name in its xn-- form)")
	}
	port := u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return invalid("port is empty")
		}
		// An https node is almost always behind a TLS terminator on 443;
		// a plain one is Ollama itself.
		port = strconv.Itoa(DefaultPort)
		if scheme == "https" {
			port = "443"
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return invalid("port must be between 1 and 65535")
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p)), nil
}

// validHost reports whether host (without brackets or port) has only the
// characters of a DNS name or an IP address. The dialer resolves names as
// they are, so a non-ASCII name could never be reached.
func validHost(host string) bool {
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '_', c == ':':
		default:
			return false
		}
	}
	return true
}
