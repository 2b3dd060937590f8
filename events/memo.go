package events

// memoSize bounds each memo: well above the number of distinct values in
// use at once (command names, clone flag combinations), and small enough
// that the memory it holds does not matter.
const memoSize = 4096

// memo remembers the values computed for keys that repeat, to compute
// (and allocate) each once. To stay bounded it forgets everything when
// full: cheaper than tracking what is oldest, and what repeats is back
// after one miss each. The zero value is ready to use.
type memo[K comparable, V any] struct {
	m map[K]V
}

// get returns the value for k, computing it with compute if it is not
// remembered.
func (c *memo[K, V]) get(k K, compute func(K) V) V {
	if v, ok := c.m[k]; ok {
		return v
	}
	if c.m == nil {
		c.m = make(map[K]V)
	} else if len(c.m) >= memoSize {
		clear(c.m)
	}
	v := compute(k)
	c.m[k] = v
	return v
}

// last is the bytes made for the last key seen, for what an event shares
// with the one before, which a writer then makes once: its context
// (events come in runs from one container, and a destroy's context is its
// owner's) and its actor (the events of one record share it, and so do
// the records of a process that does one operation after another). Only
// the last: a map would hash every byte of a key's strings, where
// comparing them with the last key's is cheap, as they are the decoder's
// and the Attributor's: the same each time, down to the pointers.
type last[K comparable] struct {
	key   K
	b     []byte
	valid bool
}

// get returns the bytes made for k, if k is the last key; else what set
// should append to (the last key's buffer, emptied).
func (l *last[K]) get(k *K) ([]byte, bool) {
	if l.valid && *k == l.key {
		return l.b, true
	}
	return l.b[:0], false
}

// set makes b the bytes for k; valid until the next call to set.
func (l *last[K]) set(k *K, b []byte) []byte {
	l.key, l.b, l.valid = *k, b, true
	return b
}
