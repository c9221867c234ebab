package concurrency

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameBytes bounds a recipe name, leaving room under etcd's key limits
// for the segments concord appends.
const MaxNameBytes = 1024

// ValidateName checks a recipe's name (a lock's, an election's, ...). Names
// are key prefixes: non-empty, valid UTF-8 without NUL bytes, at most
// MaxNameBytes, and with no "/"-separated segment that is empty or starts
// with "." (concord keeps its own segments there, so one name's keys can
// never fall under another's).
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidName, len(name), MaxNameBytes)
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: %q is not valid UTF-8 without NUL", ErrInvalidName, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return fmt.Errorf("%w: %q has an empty or dot-prefixed segment", ErrInvalidName, name)
		}
	}
	return nil
}

// ValidateValue checks that a value fits in one etcd request.
func ValidateValue(v string) error {
	if len(v) > MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrValueTooLarge, len(v), MaxValueBytes)
	}
	return nil
}

// UniqueKey returns prefix + the session's lease in hex + a random suffix:
// unique per call, so two holders on one session never share a key.
func (s *Session) UniqueKey(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%016x-%s", prefix, int64(s.id), hex.EncodeToString(b[:]))
}
