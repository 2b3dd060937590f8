package main

import (
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes --ring-size takes, powers of 1024 whichever
// way they are written (as for ulimit, bpftrace's and perf's buffer sizes).
var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30},
	{"KB", 10}, {"MB", 20}, {"GB", 30},
	{"K", 10}, {"M", 20}, {"G", 30},
	{"k", 10}, {"m", 20}, {"g", 30},
}

// maxRingSize is the largest ring buffer nstrace asks for; the kernel
// refuses more than a few GiB, and memory is charged for all of it.
const maxRingSize = 1 << 30

// parseRingSize reads a --ring-size value: bytes, or a number with K, M or
// G. The kernel wants a power-of-two number of pages.
func parseRingSize(s string) (int, error) {
	num, shift := s, uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, shift = strings.TrimSuffix(s, u.suffix), u.shift
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 || n > maxRingSize>>shift {
		return 0, fmt.Errorf("invalid --ring-size %q: want a size such as 16M or 65536, at most 1G", s)
	}
	size := int(n << shift)
	page := os.Getpagesize()
	if size%page != 0 || bits.OnesCount(uint(size/page)) != 1 {
		return 0, fmt.Errorf("invalid --ring-size %q: must be a power-of-two number of %d KiB pages (e.g. 4M, 16M, 64M)", s, page>>10)
	}
	return size, nil
}
