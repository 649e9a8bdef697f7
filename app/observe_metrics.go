package app

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aivonx/aivonx/app/fleet"
)

// metrics are the Prometheus metrics of one handler, in a registry of its
// own (never the global one, so several handlers in one process, as in
// tests, do not collide).
//
// Label cardinality is bounded: route is the matched route pattern, model
// only a model the fleet lists (else "other"), node a configured node's
// name, status an HTTP status code.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	ttfb           *prometheus.HistogramVec
	promptTokens   *prometheus.CounterVec
	evalTokens     *prometheus.CounterVec
	retries        prometheus.Counter
	failovers      prometheus.Counter
	streamFailures *prometheus.CounterVec

	labels atomic.Pointer[modelLabels]
}

// modelLabels maps the model names clients send to the label used, for
// the models of one view.
type modelLabels struct {
	view  *view
	names map[string]string
}

var statusText [600]string

func init() {
	for i := range statusText {
		statusText[i] = strconv.Itoa(i)
	}
}

func newMetrics(h *Handler) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aivonx_requests_total",
		Help: "Requests served, by route pattern, model, node and HTTP status."}, []string{"route", "model", "node", "status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "aivonx_request_duration_seconds",
		Help: "Time from the request's arrival to the end of its response.", Buckets: latency}, []string{"route"})
	m.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "aivonx_time_to_first_byte_seconds",
		Help: "Time from the request's arrival to its response headers (for streams, the first token).", Buckets: latency}, []string{"route"})
	m.promptTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aivonx_prompt_tokens_total",
		Help: "Prompt tokens evaluated, as the nodes reported them."}, []string{"model"})
	m.evalTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aivonx_completion_tokens_total",
		Help: "Completion tokens generated, as the nodes reported them."}, []string{"model"})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{Name: "aivonx_retries_total",
		Help: "Attempts sent to another node after a node could not be reached or was busy."})
	m.failovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "aivonx_failovers_total",
		Help: "Requests served by another node after their first node failed before answering."})
	m.streamFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aivonx_stream_failures_total",
		Help: "Responses cut because the node failed after the response had started."}, []string{"node"})
	m.reg.MustRegister(m.requests, m.duration, m.ttfb, m.promptTokens, m.evalTokens, m.retries, m.failovers, m.streamFailures,
		&fleetCollector{h: h},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// record counts one finished request. It takes no lock of its own: the
// model labels are swapped atomically once per fleet refresh.
func (m *metrics) record(h *Handler, r *http.Request, a *access, status int) {
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	model := ""
	if a.model != "" {
		model = m.modelLabel(h, a.model)
	}
	code := "other"
	if status >= 0 && status < len(statusText) {
		code = statusText[status]
	}
	m.requests.WithLabelValues(route, model, a.node, code).Inc()
	m.duration.WithLabelValues(route).Observe(time.Since(a.start).Seconds())
	if a.firstByte > 0 {
		m.ttfb.WithLabelValues(route).Observe(a.firstByte.Seconds())
	}
	if a.promptTok > 0 {
		m.promptTokens.WithLabelValues(model).Add(float64(a.promptTok))
	}
	if a.evalTok > 0 {
		m.evalTokens.WithLabelValues(model).Add(float64(a.evalTok))
	}
	if a.retries > 0 {
		m.retries.Add(float64(a.retries))
		if a.node != "" && status < 500 {
			m.failovers.Inc()
		}
	}
	if a.streamErr != "" {
		m.streamFailures.WithLabelValues(a.node).Inc()
	}
}

// modelLabel returns the fleet's name for a model a client sent, or
// "other" for a model no node lists (a typo must not create a series).
func (m *metrics) modelLabel(h *Handler, name string) string {
	v := h.view.cur.Load()
	if v == nil {
		return "other"
	}
	l := m.labels.Load()
	if l == nil || l.view != v {
		l = &modelLabels{view: v, names: map[string]string{}}
		for _, mem := range v.snap.Members() {
			for _, model := range mem.Status.Models {
				key := model.Key()
				l.names[key] = key
				l.names[model.Name] = key
				if short, ok := cutLatest(key); ok {
					l.names[short] = key
				}
			}
		}
		m.labels.Store(l)
	}
	if label, ok := l.names[name]; ok {
		return label
	}
	if label, ok := l.names[fleet.ModelKey(name)]; ok {
		return label
	}
	return "other"
}

func cutLatest(key string) (string, bool) {
	const suffix = ":latest"
	if len(key) > len(suffix) && key[len(key)-len(suffix):] == suffix {
		return key[:len(key)-len(suffix)], true
	}
	return "", false
}

// fleetCollector reports the fleet's state at scrape time: health,
// latency and in-flight requests per node, and the age of the worker's last
// pass.
type fleetCollector struct{ h *Handler }

var (
	descHealthy = prometheus.NewDesc("aivonx_node_healthy",
		"1 when the node is enabled, healthy and routable, else 0.", []string{"node_id", "node"}, nil)
	descEnabled = prometheus.NewDesc("aivonx_node_enabled",
		"1 when an admin enabled the node, 0 when it is drained.", []string{"node_id", "node"}, nil)
	descLatency = prometheus.NewDesc("aivonx_node_latency_seconds",
		"Latency of the node's last liveness probe (absent when unknown).", []string{"node_id", "node"}, nil)
	descInFlight = prometheus.NewDesc("aivonx_node_in_flight_requests",
		"Requests in flight on the node (across replicas in the shared mode).", []string{"node_id", "node"}, nil)
	descModels = prometheus.NewDesc("aivonx_node_models",
		"Models the node lists.", []string{"node_id", "node"}, nil)
	descPassAge = prometheus.NewDesc("aivonx_worker_last_pass_age_seconds",
		"Seconds since the newest node status was written (absent before the first pass).", nil, nil)
)

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealthy, descEnabled, descLatency, descInFlight, descModels, descPassAge} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	h := c.h
	v := h.view.get(ctx, h.now())
	for _, n := range h.nodeStates(ctx, v) {
		id := strconv.FormatInt(n.ID, 10)
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, b2f(n.Healthy), id, n.Name)
		ch <- prometheus.MustNewConstMetric(descEnabled, prometheus.GaugeValue, b2f(n.Enabled), id, n.Name)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(n.ActiveRequests), id, n.Name)
		ch <- prometheus.MustNewConstMetric(descModels, prometheus.GaugeValue, float64(len(n.Models)), id, n.Name)
		if n.LatencyMS != nil {
			ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, *n.LatencyMS/1000, id, n.Name)
		}
	}
	if last := v.lastPass(); !last.IsZero() {
		ch <- prometheus.MustNewConstMetric(descPassAge, prometheus.GaugeValue, h.now().Sub(last).Seconds())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
