package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// sample is one run of a workload in one mode.
type sample struct {
	d time.Duration
	outcome
}

// ratioTable holds every run of every workload (rows) in every mode
// (columns; the first is untraced).
type ratioTable struct {
	cfg     *config
	ws      []workload
	ms      []mode
	runs    [][][]sample   // [workload][mode]
	skipped map[int]string // mode index: why its column stopped
}

// runsRow says whether mode m runs workload w: the filter rows are for one
// nstrace mode only.
func runsRow(m mode, w workload) bool { return w.filter == nil || m.filterRows }

// runRatios runs every workload in every mode, once per round. Within a round
// the order of the modes rotates, so that none always runs first, or always
// right after the same other one.
func runRatios(cfg *config, ws []workload, ms []mode) (*ratioTable, error) {
	// The filter rows only if a column runs them (-modes may leave it out).
	if !slices.ContainsFunc(ms[1:], func(m mode) bool { return m.filterRows }) {
		ws = slices.DeleteFunc(slices.Clone(ws), func(w workload) bool { return w.filter != nil })
	}
	t := &ratioTable{cfg: cfg, ws: ws, ms: ms, skipped: map[int]string{}}
	t.runs = make([][][]sample, len(ws))
	for i := range t.runs {
		t.runs[i] = make([][]sample, len(ms))
	}
	for r := range cfg.rounds {
		progress("ratios: round %d of %d", r+1, cfg.rounds)
		for wi, w := range ws {
			for k := range ms {
				mi := (k + r) % len(ms)
				m := ms[mi]
				if !runsRow(m, w) || t.skipped[mi] != "" {
					continue
				}
				s, err := measure(cfg, m, w)
				if cfg.verbose && err == nil {
					progress("  %s, %s: %s/op, %d events, %d lost, peak RSS %d KiB, CPU %s",
						w.name, m.name, perOp(s.d, w.n), s.events, s.lost, s.maxRSS, s.cpu)
				}
				switch {
				case err == nil:
					t.runs[wi][mi] = append(t.runs[wi][mi], s)
				case m.kind == bpftraceKind:
					// bpftrace is the reference, not the subject: without
					// it the bench still says what it can.
					t.skipped[mi] = err.Error()
					loud(fmt.Sprintf("%s failed on %s: its column is SKIPPED from here on: %v", m.name, w.name, err))
				default:
					return nil, fmt.Errorf("%s: %w", w.name, err)
				}
			}
		}
	}
	return t, nil
}

// measure runs w once in mode m.
func measure(cfg *config, m mode, w workload) (sample, error) {
	time.Sleep(cfg.settle)
	runtime.GC() // not during the timed loop, as far as that goes
	if m.kind == untraced {
		d, err := w.run(w.n)
		return sample{d: d}, err
	}
	var extra []string
	if m.kind == nstraceKind {
		extra = w.filter
	}
	t, err := startTracer(m, extra...)
	if err != nil {
		return sample{}, err
	}
	d, werr := w.run(w.n)
	o, err := t.stop()
	return sample{d, o}, errors.Join(werr, err)
}

func loud(msg string) {
	msg = "*** " + msg + " ***"
	fmt.Println(msg)
	fmt.Fprintln(os.Stderr, "bench:", msg)
}

const (
	nameW = 35
	cellW = 12
)

func (t *ratioTable) print() {
	fmt.Printf("\nRATIOS: traced time per op / untraced time per op, medians of %d round(s); Lx%%: x%% of the events lost\n", t.cfg.rounds)
	fmt.Printf("%-*s %8s %9s %6s", nameW, "WORKLOAD", "OPS", "UNTRACED", "SPREAD")
	for _, m := range t.ms[1:] {
		fmt.Printf(" %*s", cellW, m.name)
	}
	fmt.Println()
	for wi, w := range t.ws {
		base := durations(t.runs[wi][0])
		fmt.Printf("%-*s %8s %9s %6s", nameW, w.name, count(float64(w.n)), perOp(median(base), w.n), spread(base))
		for mi := range t.ms[1:] {
			fmt.Printf(" %*s", cellW, t.ratioCell(wi, mi+1))
		}
		fmt.Println()
	}
	fmt.Println("(UNTRACED: median time per op; SPREAD: (slowest - fastest) / median of the untraced runs.)")
	for mi, why := range t.skipped {
		fmt.Printf("(%s: column stopped: %s)\n", t.ms[mi].name, why)
	}
	t.printFloor()
	t.printEvents()
}

func (t *ratioTable) ratioCell(wi, mi int) string {
	runs, base := t.runs[wi][mi], t.runs[wi][0]
	if len(runs) == 0 || len(base) == 0 {
		return "-"
	}
	s := fmt.Sprintf("%.3f", float64(median(durations(runs)))/float64(median(durations(base))))
	var lost, all uint64
	for _, r := range runs {
		lost += r.lost
		all += r.events + r.lost
	}
	if lost > 0 {
		s += " L" + percent(100*float64(lost)/float64(all))
	}
	return s
}

// printFloor sets the unrelated-load rows against bpftrace with empty
// syscall tracepoint programs: what enabling one (bt-1probe) or an entry and
// an exit (bt-2probe, what the tracepoint backend enables) costs every
// system call, before a tracer does anything.
func (t *ratioTable) printFloor() {
	for _, name := range []string{"bt-1probe", "bt-2probe"} {
		floor := slices.IndexFunc(t.ms, func(m mode) bool { return m.name == name })
		if floor < 0 {
			continue
		}
		fmt.Printf("\nUnrelated load over the floor (traced time / %s time, same rounds):\n", name)
		for wi, w := range t.ws {
			f := t.runs[wi][floor]
			if !w.unrelated || len(f) == 0 {
				continue
			}
			var cells []string
			for mi, m := range t.ms {
				if m.kind == nstraceKind && len(t.runs[wi][mi]) > 0 {
					r := float64(median(durations(t.runs[wi][mi]))) / float64(median(durations(f)))
					cells = append(cells, fmt.Sprintf("%s %.3f", m.name, r))
				}
			}
			fmt.Printf("  %-*s %s\n", nameW-2, w.name, strings.Join(cells, ", "))
		}
	}
}

// printEvents gives, per traced run, the events printed and lost (medians)
// and the rate they were produced at while the workload ran.
func (t *ratioTable) printEvents() {
	const w = 19
	fmt.Println("\nEVENTS per run: printed (median), lost (L: the most in one run, if any), produced per second of the workload (median)")
	fmt.Printf("%-*s", nameW, "WORKLOAD")
	for _, m := range t.ms[1:] {
		fmt.Printf(" %*s", w, m.name)
	}
	fmt.Println()
	for wi, wl := range t.ws {
		fmt.Printf("%-*s", nameW, wl.name)
		for mi := range t.ms[1:] {
			fmt.Printf(" %*s", w, eventsCell(t.runs[wi][mi+1]))
		}
		fmt.Println()
	}
	fmt.Println("(nstrace: 3 events per unshare, create + nsproxy_free + destroy; bpftrace: a line per syscall;")
	fmt.Println(" unrelated rows: whatever else happens on the machine meanwhile.)")
}

func eventsCell(runs []sample) string {
	if len(runs) == 0 {
		return "-"
	}
	var printed, rate []float64
	var lost uint64
	for _, r := range runs {
		printed = append(printed, float64(r.events))
		lost = max(lost, r.lost)
		rate = append(rate, float64(r.events+r.lost)/r.d.Seconds())
	}
	s := count(median(printed))
	if lost > 0 {
		s += " L" + count(float64(lost))
	}
	return s + " " + count(median(rate)) + "/s"
}

func durations(runs []sample) []time.Duration {
	var ds []time.Duration
	for _, r := range runs {
		ds = append(ds, r.d)
	}
	return ds
}

func median[T time.Duration | float64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func spread(ds []time.Duration) string {
	if len(ds) < 2 {
		return "-"
	}
	return percent(100 * float64(slices.Max(ds)-slices.Min(ds)) / float64(median(ds)))
}

// perOp is d/n with three significant digits.
func perOp(d time.Duration, n int) string {
	if n == 0 || d == 0 {
		return "-"
	}
	return nanos(float64(d) / float64(n))
}

func nanos(ns float64) string {
	// (Bounds at x99.5: %.3g would round 999.7 to 1e+03.)
	switch {
	case ns < 999.5:
		return fmt.Sprintf("%.0fns", ns)
	case ns < 999.5e3:
		return fmt.Sprintf("%.3gµs", ns/1e3)
	case ns < 999.5e6:
		return fmt.Sprintf("%.3gms", ns/1e6)
	}
	return fmt.Sprintf("%.3gs", ns/1e9)
}

// percent has two significant digits, or at least none after the point.
func percent(x float64) string {
	switch {
	case x >= 9.95:
		return fmt.Sprintf("%.0f%%", x)
	case x >= 0.995:
		return fmt.Sprintf("%.1f%%", x)
	}
	return fmt.Sprintf("%.2f%%", x)
}

// count is x with a k or M suffix, three significant digits.
func count(x float64) string {
	switch {
	case x < 999.5:
		return fmt.Sprintf("%.0f", x)
	case x < 999.5e3:
		return fmt.Sprintf("%.3gk", x/1e3)
	}
	return fmt.Sprintf("%.3gM", x/1e6)
}
