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
