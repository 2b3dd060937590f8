package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// loadParallel creates spec's maps, then loads its programs in two halves
// at once: the verifier takes most of the start-up time, and it runs in
// the loading thread, so two loads keep two CPUs busy. The programs are
// split by size, the largest first, so that the halves take about as long.
func loadParallel(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	mapSpec := spec.Copy()
	mapSpec.Programs = nil
	coll, err := ebpf.NewCollection(mapSpec)
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
	var halves [2][]string
	var size [2]int
	for _, n := range names {
		i := 0
		if size[1] < size[0] {
			i = 1
		}
		halves[i] = append(halves[i], n)
		size[i] += len(spec.Programs[n].Instructions)
	}

	// Both loads share the kernel's types (CO-RE) and the cache in which
	// they look up their attach targets; without it each load decodes the
	// kernel's BTF again.
	kt, err := kernelTypes()
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	opts := ebpf.CollectionOptions{MapReplacements: coll.Maps, Programs: ebpf.ProgramOptions{KernelTypes: kt}, Cache: btfCache}
	var wg sync.WaitGroup
	var errs [2]error
	var progs [2]map[string]*ebpf.Program
	for i, half := range halves {
		wg.Go(func() {
			s := spec.Copy()
			s.Programs = make(map[string]*ebpf.ProgramSpec, len(half))
			for _, n := range half {
				s.Programs[n] = spec.Programs[n].Copy()
			}
			// The maps are the ones made above; only the programs are new.
			c, err := ebpf.NewCollectionWithOptions(s, opts)
			if err != nil {
				errs[i] = err
				return
			}
			progs[i] = c.Programs
		})
	}
	wg.Wait()
	coll.Programs = make(map[string]*ebpf.Program, len(names))
	for _, ps := range progs {
		for n, p := range ps {
			coll.Programs[n] = p
		}
	}
	if err := errors.Join(errs[:]...); err != nil {
		coll.Close()
		return nil, err
	}
	if len(coll.Programs) != len(names) {
		coll.Close()
		return nil, fmt.Errorf("loaded %d of %d programs", len(coll.Programs), len(names))
	}
	return coll, nil
}
