// Package metrics serves what nstrace sees as Prometheus metrics: the
// events it reported, by event and namespace type; failures by errno;
// namespaces alive and how long they lived, by type; lost events; the ring
// buffer's fill; the backend and the build. Every label has a small, fixed
// set of values: no pid, inode number, cgroup or container id, so that a
// node's series stay in the dozens whatever runs on it.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nstrace/nstrace/events"
)

// Source is what a scrape reads from the tracer.
type Source interface {
	// LiveCounts is how many namespaces of each type are alive.
	LiveCounts() ([events.NumTypes]uint64, error)
	// RingBuffer is the ring buffer's bytes waiting now, the most that
	// ever waited, and its size.
	RingBuffer() (used, peak, size int)
}

// Build says what is running, for nstrace_build_info.
type Build struct {
	Version, Commit, GoVersion, BPFObject string
}

// kinds are the events counted in nstrace_events_total (lost has its own
// counter; a summary is no event about a namespace).
var kinds = []events.Kind{events.Create, events.Join, events.NsproxyFree, events.Destroy, events.Exist, events.Fail, events.Limit, events.Orphan}

// Metrics counts events as they are written out and serves them.
type Metrics struct {
	reg      *prometheus.Registry
	failures *prometheus.CounterVec
	lost     prometheus.Counter
	// The children of nstrace_events_total and of the lifetime histogram,
	// made once: a label lookup per event would hash strings each time.
	byEvent  [events.Orphan + 1][events.NumTypes + 1]prometheus.Counter
	lifetime [events.NumTypes]prometheus.Observer
	// failuresBy caches failures' children by errno and syscall.
	failuresBy map[failKey]prometheus.Counter
	warned     atomic.Bool // a scrape could not read the live namespaces (said once)
}

type failKey struct {
	errno   uint16
	syscall string
}

// LifetimeBuckets are the upper bounds, in seconds, of the lifetime
// histogram: from a millisecond (an unshare in a loop) to a day (a
// long-running container's).
var LifetimeBuckets = []float64{0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 6 * 3600, 24 * 3600}

// New makes the metrics of one run on backend, reading src at each scrape.
func New(src Source, backend string, build Build) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), failuresBy: make(map[failKey]prometheus.Counter)}
	eventsTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nstrace_events_total",
		Help: "Events nstrace reported, by event (create, join, nsproxy_free, destroy, exist, fail, limit, orphan) and namespace type (empty where none applies).",
	}, []string{"event", "type"})
	for _, k := range kinds {
		for t := range events.NumTypes + 1 {
			typ := events.NoType
			if t < events.NumTypes {
				typ = events.NsType(t)
			}
			// Series only for what can happen: an nsproxy_free has no
			// type, a fail may have none, the others always have one.
			if (k == events.NsproxyFree) != (typ == events.NoType) && k != events.Fail {
				continue
			}
			m.byEvent[k][t] = eventsTotal.WithLabelValues(k.String(), typ.String())
		}
	}
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nstrace_failures_total",
		Help: "Namespace operations that failed (clone, clone3, unshare, setns asking for a namespace), by errno and syscall.",
	}, []string{"errno", "syscall"})
	lifetime := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nstrace_namespace_lifetime_seconds",
		Help:    "How long namespaces lived, from their create to their destroy, both seen by this run, by type.",
		Buckets: LifetimeBuckets,
	}, []string{"type"})
	for t := range events.NumTypes {
		m.lifetime[t] = lifetime.WithLabelValues(events.NsType(t).String())
	}
	m.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nstrace_lost_events_total",
		Help: "Events lost: the ring buffer or a table had no room for them (each loss is also reported as a lost event in the output).",
	})
	backendInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nstrace_backend_info",
		Help: "The backend nstrace traces with (fentry, kprobe or tracepoint); always 1.",
	}, []string{"backend"})
	backendInfo.WithLabelValues(backend).Set(1)
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nstrace_build_info",
		Help: "nstrace's version, commit, Go version and BPF object digest; always 1.",
	}, []string{"version", "commit", "goversion", "bpf_object"})
	buildInfo.WithLabelValues(build.Version, build.Commit, build.GoVersion, build.BPFObject).Set(1)

	m.reg.MustRegister(eventsTotal, m.failures, lifetime, m.lost, backendInfo, buildInfo, &scraped{m: m, src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe counts ev, an event just written out.
func (m *Metrics) Observe(ev *events.Event) {
	switch ev.Kind {
	case events.Lost:
		m.lost.Add(float64(ev.Count))
		return
	case events.Summary:
		return
	}
	t := int(ev.Type)
	if t >= events.NumTypes || ev.Kind == events.NsproxyFree {
		t = events.NumTypes // no type (an nsproxy holds one of each)
	}
	if int(ev.Kind) < len(m.byEvent) {
		if c := m.byEvent[ev.Kind][t]; c != nil {
			c.Inc()
		}
	}
	switch {
	case ev.Kind == events.Fail:
		k := failKey{ev.Errno, ev.Syscall}
		c, ok := m.failuresBy[k]
		if !ok {
			c = m.failures.WithLabelValues(events.ErrnoName(ev.Errno), ev.Syscall)
			m.failuresBy[k] = c
		}
		c.Inc()
	case ev.Kind == events.Destroy && ev.HasLifetime && t < events.NumTypes:
		m.lifetime[t].Observe(ev.Lifetime.Seconds())
	}
}

// Lost counts n events lost that no lost event reported (they were dropped
// after the stop request).
func (m *Metrics) Lost(n uint64) { m.lost.Add(float64(n)) }

// scraped collects what is read from the tracer at scrape time.
type scraped struct {
	m   *Metrics
	src Source
}

var (
	aliveDesc = prometheus.NewDesc("nstrace_namespaces_alive",
		"Namespaces alive that nstrace knows of (found at start-up or created since), by type.", []string{"type"}, nil)
	ringUsedDesc = prometheus.NewDesc("nstrace_ring_buffer_used_bytes",
		"Bytes in the ring buffer waiting to be read.", nil, nil)
	ringPeakDesc = prometheus.NewDesc("nstrace_ring_buffer_peak_used_bytes",
		"The most bytes that have waited in the ring buffer since nstrace started (seen as records were read).", nil, nil)
	ringSizeDesc = prometheus.NewDesc("nstrace_ring_buffer_size_bytes",
		"The ring buffer's size (--ring-size).", nil, nil)
)

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	ch <- aliveDesc
	ch <- ringUsedDesc
	ch <- ringPeakDesc
	ch <- ringSizeDesc
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	if n, err := s.src.LiveCounts(); err != nil {
		if !s.m.warned.Swap(true) {
			slog.Warn("metrics: cannot count the live namespaces", "err", err)
		}
	} else {
		for t, c := range n {
			ch <- prometheus.MustNewConstMetric(aliveDesc, prometheus.GaugeValue, float64(c), events.NsType(t).String())
		}
	}
	used, peak, size := s.src.RingBuffer()
	ch <- prometheus.MustNewConstMetric(ringUsedDesc, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(ringPeakDesc, prometheus.GaugeValue, float64(peak))
	ch <- prometheus.MustNewConstMetric(ringSizeDesc, prometheus.GaugeValue, float64(size))
}

// ParseAddr checks a --metrics-addr value and returns the address to
// listen on: a port alone ("9090" or ":9090") means the loopback interface,
// so that nothing is exposed unless a host is named ("0.0.0.0:9090").
func ParseAddr(s string) (string, error) {
	if p, err := strconv.ParseUint(s, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", strconv.FormatUint(p, 10)), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want HOST:PORT, :PORT or PORT")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Server serves the metrics on /metrics.
type Server struct {
	srv *http.Server
	l   net.Listener
}

// Listen opens addr (as ParseAddr returns it). It is separate from Serve so
// that the port is bound while nstrace still has its privileges.
func (m *Metrics) Listen(addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "nstrace: metrics at /metrics")
	})
	return &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, l: l}, nil
}

// Addr is the address the server listens on (with the port the kernel
// chose, if it was 0).
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve serves until Close.
func (s *Server) Serve() {
	if err := s.srv.Serve(s.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Warn("metrics server stopped", "err", err)
	}
}

// Close stops the server; a scrape under way is cut off.
func (s *Server) Close() error { return s.srv.Close() }
