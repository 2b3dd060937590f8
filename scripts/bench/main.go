// Command bench measures what tracing with nstrace costs the traced
// machine: each workload runs untraced and traced, alternating rounds in one
// invocation (these machines are noisy), and the medians are compared.
//
//	go build -o /tmp/nstrace ./cmd/nstrace
//	sudo go run ./scripts/bench -nstrace /tmp/nstrace
//
// With -compare OLD (another nstrace build, an earlier commit's, say) each
// workload without extra arguments also runs traced by OLD, in the same
// rounds, and the OLD column gives its ratio: a regression shows there.
//
// It measures and prints; it asserts nothing.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type workload struct {
	name string
	n    int
	op   func() error
	// args are extra nstrace arguments (filters) for the traced runs.
	args []string
}

func main() {
	bin := flag.String("nstrace", "./nstrace", "nstrace binary")
	backend := flag.String("backend", "auto", "backend to trace with")
	rounds := flag.Int("rounds", 5, "rounds per workload and mode")
	compare := flag.String("compare", "", "another nstrace binary to run the same workloads with (its ratio is printed too)")
	flag.Parse()
	if err := run(*bin, *backend, *rounds, *compare); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin, backend string, rounds int, compare string) error {
	workloads := []workload{
		{"fork+exit (no namespaces)", 2000, func() error { return spawn(0) }, nil},
		{"clone(NEWUTS|NEWIPC)+exit", 2000, func() error { return spawn(unix.CLONE_NEWUTS | unix.CLONE_NEWIPC) }, nil},
		{"100x unshare(NEWUTS) on a new thread", 200, unshareUTS, nil},
		// The same churn, all of it dropped in the kernel by a filter: what
		// is left is the hooks' and the filter's own cost.
		{"  same, filtered out (--comm)", 200, unshareUTS, []string{"--comm", "nst-no-such-task"}},
		{"  same, filtered out (--container)", 200, unshareUTS, []string{"--container", "0123456789ab"}},
		{"open+close /dev/null (kfree-heavy)", 200000, openClose, nil},
	}
	fmt.Printf("%-38s %12s %12s %7s %9s", "WORKLOAD", "UNTRACED", "TRACED", "RATIO", "EVENTS/S")
	if compare != "" {
		fmt.Printf(" %7s", "OLD")
	}
	fmt.Println()
	for _, w := range workloads {
		var base, traced, old []time.Duration
		var rate float64
		for range rounds {
			d, err := measure(w)
			if err != nil {
				return err
			}
			base = append(base, d)
			d, r, err := measureTraced(bin, backend, w, true)
			if err != nil {
				return err
			}
			traced = append(traced, d)
			rate = max(rate, r)
			if compare != "" && w.args == nil {
				if d, _, err = measureTraced(compare, backend, w, false); err != nil {
					return err
				}
				old = append(old, d)
			}
		}
		b, t := median(base), median(traced)
		fmt.Printf("%-38s %12s %12s %7.3f %9.0f", w.name, b/time.Duration(w.n), t/time.Duration(w.n), float64(t)/float64(b), rate)
		if len(old) > 0 {
			fmt.Printf(" %7.3f", float64(median(old))/float64(b))
		}
		fmt.Println()
	}
	return nil
}

func measure(w workload) (time.Duration, error) {
	start := time.Now()
	for range w.n {
		if err := w.op(); err != nil {
			return 0, fmt.Errorf("%s: %w", w.name, err)
		}
	}
	return time.Since(start), nil
}

// measureTraced runs w while nstrace -o json writes to /dev/null, and
// returns the time and the event rate nstrace reported. current says bin
// knows this build's flags (an older build compared with does not).
func measureTraced(bin, backend string, w workload, current bool) (time.Duration, float64, error) {
	args := []string{"-o", "json", "--backend", backend}
	if current {
		args = append(append(args, "--docker-socket", ""), w.args...)
	}
	cmd := exec.Command(bin, args...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "tracing namespaces") {
	}
	d, err := measure(w)
	cmd.Process.Signal(os.Interrupt)
	var summary string
	for sc.Scan() {
		summary = sc.Text()
	}
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("nstrace: %v (%s)", werr, summary)
	}
	var events, lost int
	fmt.Sscanf(summary, "nstrace: %d events, %d lost", &events, &lost)
	if lost > 0 {
		fmt.Fprintf(os.Stderr, "bench: %s: nstrace lost %d events\n", w.name, lost)
	}
	return d, float64(events) / d.Seconds(), err
}

func spawn(flags uintptr) error {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	return cmd.Run()
}

// unshareUTS creates a uts namespace and drops the previous one: the
// cheapest full namespace lifecycle. The thread is thrown away at the end.
func unshareUTS() error {
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its namespaces
		var err error
		for range 100 {
			if err = unix.Unshare(unix.CLONE_NEWUTS); err != nil {
				break
			}
		}
		errc <- err
	}()
	return <-errc
}

func openClose() error {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
