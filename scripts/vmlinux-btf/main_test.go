package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// blob is a BTF blob with one int type named name.
func blob(t *testing.T, name string) []byte {
	t.Helper()
	var b btf.Builder
	if _, err := b.Add(&btf.Int{Name: name, Size: 4, Encoding: btf.Signed}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: binary.LittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestExtract(t *testing.T) {
	small, big := blob(t, "a"), blob(t, "a_longer_name_than_the_other")
	// A boot image: code, a small blob (a module's, say), the kernel's,
	// a broken header; gzip-compressed too.
	image := bytes.Join([][]byte{bytes.Repeat([]byte{0x9f}, 100), small, []byte("junk"), big,
		{0x9f, 0xeb, 0x01, 0x00, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}}, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(image)
	zw.Close()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"Image": image, "vmlinuz": gz.Bytes()} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := extract(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, big) {
			t.Errorf("%s: got %d bytes, want the larger blob (%d bytes)", name, len(got), len(big))
		}
		spec, err := btf.LoadSpecFromReader(bytes.NewReader(got))
		if err != nil {
			t.Fatalf("%s: extracted BTF does not parse: %v", name, err)
		}
		var i *btf.Int
		if err := spec.TypeByName("a_longer_name_than_the_other", &i); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	path := filepath.Join(dir, "none")
	os.WriteFile(path, []byte("no btf here"), 0o644)
	if _, err := extract(path); err == nil {
		t.Error("a file without BTF: no error")
	}
}
