// Package names validates recipe names and values, the one place their
// rules live.
package names

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/concordkit/concord/internal/errs"
)

// MaxNameBytes bounds a recipe name, leaving room under etcd's key limits
// for the segments concord appends.
const MaxNameBytes = 1024

// Validate checks a recipe's name (a lock's, an election's, ...). Names
// are key prefixes: non-empty, valid UTF-8 without NUL bytes, at most
// MaxNameBytes, and with no "/"-separated segment that is empty or starts
// with "." (concord keeps its own segments there, so one name's keys can
// never fall under another's).
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", errs.InvalidName)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", errs.InvalidName, len(name), MaxNameBytes)
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: %q is not valid UTF-8 without NUL", errs.InvalidName, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return fmt.Errorf("%w: %q has an empty or dot-prefixed segment", errs.InvalidName, name)
		}
	}
	return nil
}

// ValidateValue checks that a value fits in one etcd request.
func ValidateValue(v string) error {
	if len(v) > MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", errs.ValueTooLarge, len(v), MaxValueBytes)
	}
	return nil
}

// MaxValueBytes is the largest value concord stores with a key: etcd's
// default request limit (1.5 MiB) less room for the key and the request.
const MaxValueBytes = 1536*1024 - 4096
