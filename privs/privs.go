// Package privs gives up, once a tracer is attached, the power it no
// longer needs: every capability except those its remaining work is shown
// to need on this kernel, the bounding set with them, and any gain of
// privilege through execve (no_new_privs).
//
// What is kept is found by trying, not assumed: each Check runs on a
// thread of its own whose effective set holds only the candidate
// capabilities, and the first candidate under which it passes is kept.
// Kernels differ here: before 6.5 (with kernel.unprivileged_bpf_disabled
// set, the default) every bpf() command needs CAP_BPF, even on a map
// already open; since, a file descriptor is enough.
package privs

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// A Check is work the process still does once privileges are dropped.
type Check struct {
	// What names it in messages: "BPF maps and programs".
	What string
	// Run does the work, or the part of it that needs privilege, with its
	// system calls made in the calling goroutine (it is locked to the
	// thread whose capabilities are lowered).
	Run func() error
	// Fallbacks are capabilities to try, one at a time, if Run fails with
	// those already kept.
	Fallbacks []cap.Value
}

// Dropped says what Drop left the process with.
type Dropped struct {
	Kept []cap.Value
	// Why says, for each capability kept, what failed without it.
	Why []string
	// Bounding is whether the bounding set was cut to Kept too (it needs
	// CAP_SETPCAP, which a run with file capabilities may not have).
	Bounding bool
}

// Drop finds, check by check, the capabilities to keep, then drops every
// other one from every thread's effective, permitted and inheritable sets
// (and the ambient and, where it may, bounding sets), and sets
// no_new_privs. If a check fails under every candidate, nothing is
// dropped and the error says which.
func Drop(checks ...Check) (Dropped, error) {
	var kept []cap.Value
	var why []string
	for _, c := range checks {
		err := tryWith(kept, c.Run)
		if err == nil {
			continue
		}
		ok := false
		for _, f := range c.Fallbacks {
			if slices.Contains(kept, f) {
				continue
			}
			if tryWith(append(slices.Clone(kept), f), c.Run) == nil {
				kept = append(kept, f)
				why = append(why, fmt.Sprintf("%s: %v", c.What, err))
				ok = true
				break
			}
		}
		if !ok {
			return Dropped{}, fmt.Errorf("%s fails without capabilities (%w), and with each of %v", c.What, err, c.Fallbacks)
		}
	}
	d, err := apply(kept)
	d.Why = why
	return d, err
}

// tryWith runs fn on a thread whose effective set is only caps, and then
// raises it back (the permitted set is untouched). The thread is locked
// and never unlocked: threads the runtime starts meanwhile come from its
// template thread, not this one, and when the goroutine ends the runtime
// ends the thread, so none with a lowered set is ever reused. A thread
// that is ending still counts for the all-threads calls of apply, which
// fail if any thread's result differs: hence the raise.
func tryWith(caps []cap.Value, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var orig, low [2]unix.CapUserData
		if err := unix.Capget(&hdr, &orig[0]); err != nil {
			done <- fmt.Errorf("capget: %w", err)
			return
		}
		low = orig
		low[0].Effective, low[1].Effective = 0, 0
		for _, c := range caps {
			low[c/32].Effective |= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &low[0]); err != nil {
			done <- fmt.Errorf("lower this thread's capabilities to %v: %w", caps, err)
			return
		}
		err := fn()
		if rerr := unix.Capset(&hdr, &orig[0]); rerr != nil && err == nil {
			err = fmt.Errorf("raise this thread's capabilities again: %w", rerr)
		}
		done <- err
	}()
	return <-done
}

func apply(kept []cap.Value) (Dropped, error) {
	d := Dropped{Kept: kept}
	all := make([]cap.Value, 0, cap.MaxBits())
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if !slices.Contains(kept, v) {
			all = append(all, v)
		}
	}
	// The bounding set first: dropping from it takes CAP_SETPCAP, which
	// goes next.
	if on, _ := cap.GetProc().GetFlag(cap.Effective, cap.SETPCAP); on {
		if err := cap.DropBound(all...); err != nil {
			return d, fmt.Errorf("drop the bounding set: %w", err)
		}
		d.Bounding = true
	}
	if err := cap.ResetAmbient(); err != nil && !errors.Is(err, unix.EINVAL) {
		return d, fmt.Errorf("clear the ambient set: %w", err)
	}
	s := cap.NewSet()
	if err := s.SetFlag(cap.Permitted, true, kept...); err != nil {
		return d, err
	}
	if err := s.SetFlag(cap.Effective, true, kept...); err != nil {
		return d, err
	}
	if err := s.SetProc(); err != nil {
		return d, fmt.Errorf("set capabilities %v: %w", kept, err)
	}
	if _, err := cap.Prctlw(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return d, fmt.Errorf("set no_new_privs: %w", err)
	}
	return d, nil
}

// Names lists capabilities as the kernel's headers spell them (CAP_BPF).
func Names(caps []cap.Value) []string {
	s := []string{}
	for _, c := range caps {
		s = append(s, strings.ToUpper(c.String()))
	}
	return s
}
