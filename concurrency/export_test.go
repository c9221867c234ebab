package concurrency

// RemoveStray exposes removeStray to the package's tests.
func RemoveStray(s *Session, key string) { s.removeStray(key) }
