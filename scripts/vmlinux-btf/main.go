// Command vmlinux-btf copies the BTF out of a kernel image to standard
// output: the .BTF section of an ELF vmlinux, or, in a boot image (arm64's
// Image, gzip-compressed or not), the largest well-formed BTF blob in it.
// make vmlinux-arm64 turns it into bpf/vmlinux/arm64.h with bpftool.
package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vmlinux-btf IMAGE > vmlinux.btf")
		os.Exit(2)
	}
	btf, err := extract(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmlinux-btf: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(btf); err != nil {
		fmt.Fprintf(os.Stderr, "vmlinux-btf: %v\n", err)
		os.Exit(1)
	}
}

func extract(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
	}
	if f, err := elf.NewFile(bytes.NewReader(data)); err == nil {
		if s := f.Section(".BTF"); s != nil {
			return s.Data()
		}
		return nil, errors.New("an ELF file without a .BTF section")
	}
	return largestBlob(data)
}

// largestBlob finds the BTF headers (magic 0xeb9f, version 1, a 24-byte
// header, the types first and the strings right after them) and returns
// the largest blob one describes: the kernel's own, not a module's or a
// test's.
func largestBlob(data []byte) ([]byte, error) {
	var best []byte
	magic := []byte{0x9f, 0xeb, 0x01}
	for off := 0; ; off++ {
		i := bytes.Index(data[off:], magic)
		if i < 0 {
			break
		}
		off += i
		h := data[off:]
		if len(h) < 24 {
			break
		}
		le := binary.LittleEndian
		hdrLen, typeOff, typeLen := le.Uint32(h[4:]), le.Uint32(h[8:]), le.Uint32(h[12:])
		strOff, strLen := le.Uint32(h[16:]), le.Uint32(h[20:])
		if hdrLen != 24 || typeOff != 0 || strOff != typeLen || strLen == 0 {
			continue
		}
		total := uint64(hdrLen) + uint64(strOff) + uint64(strLen)
		if total > uint64(len(h)) || h[hdrLen+strOff] != 0 {
			continue // the string table starts with the empty name
		}
		if int(total) > len(best) {
			best = h[:total]
		}
	}
	if best == nil {
		return nil, errors.New("no BTF in it (a kernel built without CONFIG_DEBUG_INFO_BTF?)")
	}
	return best, nil
}
