package snapshot

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// typeNames are the namespace types, named as lsns and /proc/PID/ns name
// them; a type is an index into it.
var typeNames = [...]string{"mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"}

// Indexes into typeNames.
const (
	typeMnt uint8 = iota
	typeUTS
	typeIPC
	typePid
	typeNet
	typeUser
	typeCgroup
	typeTime
)

func typeIndex(name string) (uint8, bool) {
	for i, n := range typeNames {
		if n == name {
			return uint8(i), true
		}
	}
	return 0, false
}

// parseNSLink parses what readlink returns for a namespace file
// (/proc/PID/ns/net, an open nsfs file in /proc/PID/fd, the root of an nsfs
// mount in mountinfo): "net:[4026531833]". Anything else (a path,
// "socket:[123]", "anon_inode:[pidfd]") is not a namespace: ok is false.
func parseNSLink(link string) (typ uint8, inum uint32, ok bool) {
	name, rest, found := strings.Cut(link, ":[")
	if !found || !strings.HasSuffix(rest, "]") {
		return 0, 0, false
	}
	if typ, ok = typeIndex(name); !ok {
		return 0, 0, false
	}
	digits := rest[:len(rest)-1]
	if digits == "" || digits[0] == '+' || digits[0] == '-' {
		return 0, 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	if err != nil || n == 0 {
		return 0, 0, false
	}
	return typ, uint32(n), true
}

// mountinfoNsfs returns, for one line of /proc/PID/mountinfo (proc(5)),
// the root and mount point of an nsfs mount; ok is false for other
// filesystems. The root of an nsfs mount names the namespace
// ("net:[4026532177]"); the mount point is unescaped (the kernel writes
// space, tab, newline and backslash as \ooo).
//
//	44 42 0:4 net:[4026532177] /run/netns/x rw shared:2 - nsfs nsfs rw
func mountinfoNsfs(line []byte) (root, mountpoint string, ok bool, err error) {
	// Optional fields end at a lone "-"; the filesystem type follows.
	sep := bytes.Index(line, []byte(" - "))
	if sep < 0 {
		return "", "", false, errors.New("no \" - \" separator")
	}
	after := bytes.Fields(line[sep+3:])
	if len(after) == 0 {
		return "", "", false, errors.New("no filesystem type")
	}
	if string(after[0]) != "nsfs" {
		return "", "", false, nil
	}
	before := bytes.Fields(line[:sep])
	if len(before) < 6 {
		return "", "", false, errors.New("fewer than 6 fields before the separator")
	}
	return UnescapeMountPath(string(before[3])), UnescapeMountPath(string(before[4])), true, nil
}

// UnescapeMountPath undoes the kernel's mangling (\ooo) of paths in
// /proc/PID/mountinfo.
func UnescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// parseStatus picks the parent pid and the real uid out of
// /proc/PID/status.
func parseStatus(b []byte) (ppid, uid int, ok bool) {
	var havePPid, haveUid bool
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		if v, found := bytes.CutPrefix(line, []byte("PPid:")); found {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			ppid, havePPid = n, err == nil
		} else if v, found := bytes.CutPrefix(line, []byte("Uid:")); found {
			f := bytes.Fields(v) // real, effective, saved, filesystem
			if len(f) > 0 {
				n, err := strconv.Atoi(string(f[0]))
				uid, haveUid = n, err == nil
			}
		}
		if havePPid && haveUid {
			return ppid, uid, true
		}
	}
	return 0, 0, false
}
