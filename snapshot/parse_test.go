package snapshot

import "testing"

func TestParseNSLink(t *testing.T) {
	for _, tc := range []struct {
		link string
		typ  string
		inum uint32
		ok   bool
	}{
		{"net:[4026531833]", "net", 4026531833, true},
		{"mnt:[4026531832]", "mnt", 4026531832, true},
		{"time:[4026531834]", "time", 4026531834, true},
		{"cgroup:[4026531835]", "cgroup", 4026531835, true},
		{"user:[1]", "user", 1, true},
		// /proc/PID/ns/pid_for_children reads as its type
		{"pid_for_children:[4026531836]", "", 0, false},
		// other anonymous files and paths
		{"socket:[123456]", "", 0, false},
		{"pipe:[42]", "", 0, false},
		{"anon_inode:[pidfd]", "", 0, false},
		{"pidfd:[1234]", "", 0, false},
		{"/run/netns/blue", "", 0, false},
		{"/tmp/net:[4026531833]", "", 0, false},
		{"net:[]", "", 0, false},
		{"net:[0]", "", 0, false},
		{"net:[+12]", "", 0, false},
		{"net:[-12]", "", 0, false},
		{"net:[12", "", 0, false},
		{"net:[12]x", "", 0, false},
		{"net:[4294967296]", "", 0, false}, // inode numbers of nsfs are 32-bit
		{"net:[4294967295]", "net", 4294967295, true},
		{"", "", 0, false},
	} {
		typ, inum, ok := parseNSLink(tc.link)
		if ok != tc.ok || (ok && (typeNames[typ] != tc.typ || inum != tc.inum)) {
			t.Errorf("parseNSLink(%q) = %d (%s), %d, %v; want %s, %d, %v", tc.link, typ, typeNames[typ], inum, ok, tc.typ, tc.inum, tc.ok)
		}
	}
}

func TestMountinfoNsfs(t *testing.T) {
	for _, tc := range []struct {
		line           string
		root, mp       string
		nsfs, wantsErr bool
	}{
		// ip netns add, with a propagation tag among the optional fields
		{`44 42 0:4 net:[4026532177] /run/netns/blue rw shared:2 - nsfs nsfs rw`, "net:[4026532177]", "/run/netns/blue", true, false},
		// no optional fields
		{`68 27 0:4 uts:[4026532177] /tmp/nsx/uts rw - nsfs nsfs rw`, "uts:[4026532177]", "/tmp/nsx/uts", true, false},
		// several optional fields, escaped space, tab, newline and backslash
		{`70 42 0:4 net:[4026532180] /run/netns/a\040b\011c\012d\134e rw shared:2 master:1 propagate_from:1 - nsfs nsfs rw`,
			"net:[4026532180]", "/run/netns/a b\tc\nd\\e", true, false},
		// a backslash not followed by three octal digits is kept
		{`71 42 0:4 net:[4026532181] /x\09 rw - nsfs nsfs rw`, "net:[4026532181]", `/x\09`, true, false},
		// other file systems
		{`27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard`, "", "", false, false},
		{`31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs nsfs rw`, "", "", false, false},
		// a mount point named like the separator is not one
		{`32 23 0:28 / /a\040-\040nsfs rw - tmpfs tmpfs rw`, "", "", false, false},
		// malformed
		{`44 42 0:4 net:[4026532177] /run/netns/blue rw shared:2 nsfs nsfs rw`, "", "", false, true},
		{`44 42 0:4 - nsfs nsfs rw`, "", "", false, true},
		{`44 42 0:4 net:[1] /x rw -`, "", "", false, true},
	} {
		root, mp, ok, err := mountinfoNsfs([]byte(tc.line))
		if (err != nil) != tc.wantsErr || ok != tc.nsfs || root != tc.root || mp != tc.mp {
			t.Errorf("mountinfoNsfs(%q) = %q, %q, %v, %v; want %q, %q, %v, error %v", tc.line, root, mp, ok, err, tc.root, tc.mp, tc.nsfs, tc.wantsErr)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t17\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n"
	ppid, uid, ok := parseStatus([]byte(status))
	if !ok || ppid != 17 || uid != 1000 {
		t.Errorf("parseStatus = %d, %d, %v; want 17, 1000 (the real uid), true", ppid, uid, ok)
	}
	if _, _, ok := parseStatus([]byte("Name:\tx\nPPid:\t1\n")); ok {
		t.Error("parseStatus without a Uid line succeeded")
	}
}
