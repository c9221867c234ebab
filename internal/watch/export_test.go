package watch

// NoServerPrevKV makes Follow's watches ask etcd for no previous values,
// as a watch whose request etcd has not recorded yet gets none, until
// the returned func restores them.
func NoServerPrevKV() (restore func()) {
	saved := prevKV
	prevKV = nil
	return func() { prevKV = saved }
}
