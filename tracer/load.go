package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// loadParallel creates spec's maps, then loads its programs two at a time:
// the verifier takes most of the start-up time, and it runs in the loading
// thread, so two loads keep two CPUs busy. Each loader takes the largest
// program left, one at a time: how long the verifier takes on a program is
// not in proportion to its size (tp_sys_exit takes three times as long as
// an iterator of the same length), so halves fixed in advance finished up
// to 40 ms apart.
func loadParallel(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	mapSpec := *spec
	mapSpec.Programs = nil
	coll, err := ebpf.NewCollection(&mapSpec)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(spec.Programs))
	for n := range spec.Programs {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Compare(len(spec.Programs[b].Instructions), len(spec.Programs[a].Instructions))
	})

	// The loads share the kernel's types (CO-RE) and the cache in which
	// they look up their attach targets; without it each load decodes the
	// kernel's BTF again. The specs are only read: the loader copies a
	// program before relocating it.
	kt, err := kernelTypes()
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	opts := ebpf.CollectionOptions{MapReplacements: coll.Maps, Programs: ebpf.ProgramOptions{KernelTypes: kt}, Cache: kernelCache()}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next int
		errs []error
	)
	coll.Programs = make(map[string]*ebpf.Program, len(names))
	for range 2 {
		wg.Go(func() {
			for {
				mu.Lock()
				if next == len(names) || len(errs) > 0 {
					mu.Unlock()
					return
				}
				n := names[next]
				next++
				mu.Unlock()
				one := &ebpf.CollectionSpec{Maps: spec.Maps, ByteOrder: spec.ByteOrder, Types: spec.Types,
					Programs: map[string]*ebpf.ProgramSpec{n: spec.Programs[n]}}
				c, err := ebpf.NewCollectionWithOptions(one, opts)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					coll.Programs[n] = c.Programs[n]
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		coll.Close()
		return nil, err
	}
	if len(coll.Programs) != len(names) {
		coll.Close()
		return nil, fmt.Errorf("loaded %d of %d programs", len(coll.Programs), len(names))
	}
	return coll, nil
}
