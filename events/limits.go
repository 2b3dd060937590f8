package events

// LimitWatch turns creates into limit events (--warn-limit): one when a
// user's count of a namespace type in a user namespace reaches Percent of
// the limit there, and another only after the count fell below it. The
// counts are the kernel's, carried by each create; between creates the
// destroys of the namespaces it saw created bring them down.
type LimitWatch struct {
	Percent uint32
	users   map[limitKey]*limitState
	charged map[nsKey]limitKey // the namespaces it saw created, and whose
	out     Event              // the limit event Check returns, reused
}

type limitKey struct {
	typ         NsType
	userNs, uid uint32
}

type limitState struct {
	count, limit uint32
	warned       bool
}

// NewLimitWatch warns at percent (1-100) of a limit.
func NewLimitWatch(percent uint32) *LimitWatch {
	return &LimitWatch{Percent: percent, users: map[limitKey]*limitState{}, charged: map[nsKey]limitKey{}}
}

// Check looks at a printed event. For a create that takes its user to the
// threshold it returns the limit event to print after it, valid until the
// next call (an Event is some 700 bytes: one per create would be the
// reader's largest allocation); else nil.
func (w *LimitWatch) Check(ev *Event) *Event {
	switch ev.Kind {
	case Create:
		if !ev.HasUsage || ev.UserLimit == 0 {
			return nil
		}
		k := limitKey{ev.Type, ev.UserNs, ev.UserUid}
		st := w.users[k]
		if st == nil {
			if len(w.users) >= MaxTracked {
				return nil
			}
			st = &limitState{}
			w.users[k] = st
		}
		st.count, st.limit = ev.UserCount, ev.UserLimit
		if len(w.charged) < MaxTracked {
			w.charged[nsKeyOf(ev)] = k
		}
		if !w.over(st) {
			st.warned = false
			return nil
		}
		if st.warned {
			return nil
		}
		st.warned = true
		w.out = *ev
		w.out.Kind, w.out.WarnPercent = Limit, w.Percent
		return &w.out
	case Destroy:
		nk := nsKeyOf(ev)
		k, ok := w.charged[nk]
		if !ok {
			return nil
		}
		delete(w.charged, nk)
		if st := w.users[k]; st != nil {
			if st.count > 0 {
				st.count--
			}
			if !w.over(st) {
				st.warned = false
			}
		}
	}
	return nil
}

func (w *LimitWatch) over(st *limitState) bool {
	return uint64(st.count)*100 >= uint64(w.Percent)*uint64(st.limit)
}
