package fleet

import "fmt"

// Strategy names a selection policy.
type Strategy string

// The strategies, with the upstream's names.
const (
	// LeastActive sends a request to the candidate with the fewest requests
	// in flight, breaking ties at random.
	LeastActive Strategy = "least_active"
	// LowestLatency prefers the candidates whose last probe was fastest and
	// falls back to LeastActive while no latency is known.
	LowestLatency Strategy = "lowest_latency"
)

// Strategies lists the valid strategies, in display order.
var Strategies = []Strategy{LeastActive, LowestLatency}

// ParseStrategy returns the strategy named s, or a *ValidationError.
func ParseStrategy(s string) (Strategy, error) {
	for _, v := range Strategies {
		if string(v) == s {
			return v, nil
		}
	}
	return "", &ValidationError{Field: "strategy", Msg: fmt.Sprintf("%q is not a valid choice (least_active, lowest_latency)", s)}
}

// Settings are the runtime settings an admin edits while the proxy runs.
// They are stored next to the nodes and reach every replica within a second.
type Settings struct {
	Strategy Strategy `json:"strategy"`
}

// DefaultSettings are used until an admin saves others.
func DefaultSettings() Settings { return Settings{Strategy: LeastActive} }

// Validate fills zero fields with defaults and checks the rest.
func (s *Settings) Validate() error {
	if s.Strategy == "" {
		s.Strategy = LeastActive
	}
	_, err := ParseStrategy(string(s.Strategy))
	return err
}
