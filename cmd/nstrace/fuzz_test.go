package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzParseFlags gives the command line anything (arguments separated by
// NUL bytes): it parses, or says why in one line, never panics. The
// message must be one line even when an argument holds a newline.
func FuzzParseFlags(f *testing.F) {
	for _, s := range []string{
		"-o\x00json", "-o\x00xml", "--backend\x00bogus", "--duration\x00soon", "--count\x00-1",
		"-t\x00net,uts\x00-e\x00create,destroy", "-t\x00bogus", "--pid\x001\x00--children", "--pid\x00x",
		"--comm\x00a,b", "--uid\x00root", "--uid\x00no-such-user\n", "--cgroup\x00/a/b", "--container\x00web\x00--docker-socket\x00",
		"--ring-size\x0016M", "--ring-size\x003K", "--ring-size\x0099999999999999999999",
		"--summary\x00--interval\x001s", "--interval\x0050ms", "--warn-limit\x00101", "-e\x00limit\x00--warn-limit\x000",
		"--cgroup-hierarchy\x00bogus\n", "--snapshot\x00-p\x001", "--nice\x00-30", "--kernel-stack", "extra\nline", "--",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		var stderr bytes.Buffer
		_, err := parseFlags(args, &stderr)
		if err == nil || errors.Is(err, pflag.ErrHelp) {
			return
		}
		if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("nstrace %q: the error is not one line: %q", args, msg)
		}
	})
}
