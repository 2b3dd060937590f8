package nstrace

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// ObjectDigest is the first 12 hex digits of the SHA-256 of the embedded BPF
// object: which build of the programs this binary carries (nstrace
// --version, nstrace_build_info).
var ObjectDigest = sync.OnceValue(func() string {
	sum := sha256.Sum256(_BpfBytes)
	return hex.EncodeToString(sum[:6])
})
