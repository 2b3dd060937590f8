package main

// nstrace check: can this kernel run nstrace, and with what.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/nstrace/nstrace/events"
	"github.com/nstrace/nstrace/tracer"
)

const checkUsage = `Usage: nstrace check [flags]

Say whether nstrace can trace here and with what: the kernel, its BTF,
lockdown, privileges, ring buffers, the cgroup version, which backends load
and attach (and why each that does not fails), and how each working backend
sees every namespace type's teardown. Loads each backend once, for a moment.
Exit status 0 when at least one backend works, 1 when none does.

Flags:
`

// checkReport is what nstrace check finds; -o json prints it as it is.
type checkReport struct {
	Kernel   string `json:"kernel"`
	Arch     string `json:"arch"`
	BTF      item   `json:"btf"`
	Lockdown string `json:"lockdown"`
	// Privileges: euid, and which capabilities that matter to nstrace are
	// effective.
	Euid                    int      `json:"euid"`
	Capabilities            []string `json:"capabilities"`
	UnprivilegedBPFDisabled string   `json:"unprivileged_bpf_disabled"`
	RingBuffer              item     `json:"ring_buffer"`
	// The BPF object Open loads: "current", or "compat" (for kernels
	// before 5.15) and what the kernel lacks of the current one's needs.
	BPFObject struct {
		Name    string   `json:"name"`
		Lacking []string `json:"lacking,omitempty"`
	} `json:"bpf_object"`
	Cgroup struct {
		Version   int    `json:"version"`
		Hierarchy string `json:"hierarchy"`
		Mount     string `json:"mount"`
		Error     string `json:"error,omitempty"`
	} `json:"cgroup"`
	Backends []backendReport `json:"backends"`
	// Auto is the backend --backend auto picks here; "" if none works.
	Auto string `json:"auto"`
}

type item struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

type backendReport struct {
	Name   string `json:"name"`
	Works  bool   `json:"works"`
	Reason string `json:"reason,omitempty"`
	// StartMS is how long loading and attaching took.
	StartMS int64 `json:"start_ms,omitempty"`
	// Teardowns: per namespace type, exact, polled, at-release or blind.
	Teardowns  map[string]string `json:"teardowns,omitempty"`
	BlindSpots []string          `json:"blind_spots,omitempty"`
}

// capsThatMatter are the capabilities nstrace's checks name.
var capsThatMatter = []cap.Value{cap.SYS_ADMIN, cap.BPF, cap.PERFMON, cap.SYS_RESOURCE, cap.DAC_OVERRIDE, cap.NET_BIND_SERVICE}

// runCheck is nstrace check with args; it returns the exit status.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("nstrace check", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	output := fs.StringP("output", "o", "text", "output format: text, json")
	verbose := fs.BoolP("verbose", "v", false, "log what each backend's load does on stderr")
	btfPath := fs.String("btf", "", "read the kernel's types from this BTF file instead of /sys/kernel/btf/vmlinux")
	help := fs.BoolP("help", "h", false, "show this help")
	err := fs.Parse(args)
	switch {
	case err == nil && *help:
		fmt.Fprint(stderr, checkUsage)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return exitOK
	case err == nil && fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case err == nil && *output != "text" && *output != "json":
		err = fmt.Errorf("invalid --output %q (valid: text, json)", *output)
	case err == nil && *btfPath != "":
		if berr := tracer.UseKernelBTF(*btfPath); berr != nil {
			err = fmt.Errorf("invalid --btf: %w", berr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace check: %v (see nstrace check --help)\n", oneLineError{err})
		return exitUsage
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(newLogHandler(stderr, level)))

	btf := "/sys/kernel/btf/vmlinux"
	if *btfPath != "" {
		btf = *btfPath
	}
	r := check(btf)
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "nstrace check: write: %v\n", err)
			return exitError
		}
	} else {
		writeCheck(stdout, r)
	}
	if r.Auto == "" {
		return exitError
	}
	return exitOK
}

// check finds what runCheck reports; btf is where the kernel's types are read.
func check(btf string) *checkReport {
	r := &checkReport{Arch: runtime.GOARCH, Euid: os.Geteuid(), Capabilities: []string{}}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	r.BTF = itemOf(tracer.BTFProblem(), btf)
	r.Lockdown = lockdown()
	set := cap.GetProc()
	for _, c := range capsThatMatter {
		if on, err := set.GetFlag(cap.Effective, c); err == nil && on {
			r.Capabilities = append(r.Capabilities, strings.ToUpper(c.String()))
		}
	}
	r.UnprivilegedBPFDisabled = sysctl("/proc/sys/kernel/unprivileged_bpf_disabled")
	r.RingBuffer = itemOf(tracer.RingBufferProblem(), "BPF_MAP_TYPE_RINGBUF")
	r.BPFObject.Name, r.BPFObject.Lacking = tracer.Object()
	if h, err := tracer.ChooseCgroupHierarchy(""); err != nil {
		r.Cgroup.Error = err.Error()
	} else {
		r.Cgroup.Hierarchy, r.Cgroup.Mount = h.Name, h.Mount
		r.Cgroup.Version = 1
		if h.Name == "unified" {
			r.Cgroup.Version = 2
		}
	}
	for _, b := range tracer.Backends[1:] {
		br := backendReport{Name: string(b)}
		start := time.Now()
		t, err := tracer.Open(tracer.Options{Backend: b})
		if err != nil {
			// tracer.Open prefixes "backend NAME: ", which the column says.
			br.Reason = strings.TrimPrefix(oneLineError{err}.Error(), "backend "+string(b)+": ")
		} else {
			br.Works, br.StartMS = true, time.Since(start).Milliseconds()
			br.Teardowns = map[string]string{}
			for i, how := range t.Teardowns() {
				br.Teardowns[events.NsType(i).String()] = how
			}
			br.BlindSpots = t.BlindSpots
			if err := t.Close(); err != nil {
				slog.Warn("closing the backend", "backend", b, "err", err)
			}
			if r.Auto == "" {
				r.Auto = string(b)
			}
		}
		r.Backends = append(r.Backends, br)
	}
	return r
}

func itemOf(err error, ok string) item {
	if err != nil {
		return item{Detail: oneLineError{err}.Error()}
	}
	return item{OK: true, Detail: ok}
}

// lockdown is the kernel's lockdown mode: none, integrity or
// confidentiality (integrity and up may refuse BPF programs that read
// kernel memory).
func lockdown() string {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "unknown (no /sys/kernel/security/lockdown: securityfs not mounted, or no lockdown support)"
		}
		return "unknown (" + err.Error() + ")"
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return strings.TrimSpace(s)
}

func sysctl(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// howWords explains the words of the teardown table.
const howWords = `exact: seen as it happens; polled: seen as it happens when an nsproxy held
the last reference, else within 10 ms (a bind mount or an open file held it);
at-release: seen only when an nsproxy held the last reference; blind: never.`

func writeCheck(w io.Writer, r *checkReport) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	yes := func(it item) string {
		if it.OK {
			return "yes: " + it.Detail
		}
		return "NO: " + it.Detail
	}
	fmt.Fprintf(tw, "kernel\t%s (%s)\n", r.Kernel, r.Arch)
	fmt.Fprintf(tw, "btf\t%s\n", yes(r.BTF))
	fmt.Fprintf(tw, "lockdown\t%s\n", r.Lockdown)
	who := fmt.Sprintf("euid %d", r.Euid)
	if r.Euid == 0 {
		who = "root"
	}
	caps := strings.Join(r.Capabilities, " ")
	if caps == "" {
		caps = "none of CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON"
	}
	fmt.Fprintf(tw, "privileges\t%s; effective: %s; unprivileged_bpf_disabled %s\n", who, caps, r.UnprivilegedBPFDisabled)
	fmt.Fprintf(tw, "ring buffer\t%s\n", yes(r.RingBuffer))
	if r.BPFObject.Name == "compat" {
		why := "forced by NSTRACE_BPF_OBJECT"
		if len(r.BPFObject.Lacking) > 0 {
			why = "this kernel lacks " + strings.Join(r.BPFObject.Lacking, ", ")
		}
		fmt.Fprintf(tw, "bpf object\tthe one for kernels before 5.15 (%s)\n", why)
	} else {
		fmt.Fprintf(tw, "bpf object\tcurrent\n")
	}
	if r.Cgroup.Error != "" {
		fmt.Fprintf(tw, "cgroup\tunknown: %s\n", r.Cgroup.Error)
	} else {
		fmt.Fprintf(tw, "cgroup\tv%d: events attributed in the %s hierarchy (%s)\n", r.Cgroup.Version, r.Cgroup.Hierarchy, r.Cgroup.Mount)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BACKEND\tWORKS\tSTART\tWHY NOT")
	for _, b := range r.Backends {
		if b.Works {
			fmt.Fprintf(tw, "%s\tyes\t%d ms\t\n", b.Name, b.StartMS)
		} else {
			fmt.Fprintf(tw, "%s\tno\t\t%s\n", b.Name, b.Reason)
		}
	}
	tw.Flush()
	for _, b := range r.Backends {
		if !b.Works {
			continue
		}
		fmt.Fprintf(w, "\nteardowns seen by %s:", b.Name)
		for i := range events.NumTypes {
			typ := events.NsType(i).String()
			fmt.Fprintf(w, " %s %s", typ, b.Teardowns[typ])
			if i < events.NumTypes-1 {
				fmt.Fprint(w, ",")
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\n%s\n\n", howWords)
	if r.Auto == "" {
		fmt.Fprintln(w, "nstrace cannot trace here: no backend works (see WHY NOT above).")
	} else {
		fmt.Fprintf(w, "nstrace can trace here: --backend auto picks %s.\n", r.Auto)
	}
}
