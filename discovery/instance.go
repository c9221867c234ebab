package discovery

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/concordkit/concord/internal/names"
)

// MaxNameBytes bounds a service name and an instance ID.
const MaxNameBytes = 255

// DefaultWeight is the weight of an instance whose Weight is 0.
const DefaultWeight = 1

// Instance is one registered endpoint of a service.
type Instance struct {
	// ID names the instance within its service: unique, one key segment.
	ID string
	// Addr is host:port, the address clients dial.
	Addr string
	// Metadata is passed to watchers and, through the resolver, to gRPC
	// balancers as address attributes.
	Metadata map[string]string
	// Weight is the instance's share for weighted balancers; 0 means
	// DefaultWeight.
	Weight int
	// Draining instances stay registered but the resolver hands them to no
	// new calls.
	Draining bool
}

// EffectiveWeight is Weight, or DefaultWeight when Weight is 0.
func (i Instance) EffectiveWeight() int {
	if i.Weight <= 0 {
		return DefaultWeight
	}
	return i.Weight
}

// Equal reports whether i and o are the same in every field.
func (i Instance) Equal(o Instance) bool {
	return i.ID == o.ID && i.Addr == o.Addr && i.Weight == o.Weight &&
		i.Draining == o.Draining && maps.Equal(i.Metadata, o.Metadata)
}

func (i Instance) clone() Instance {
	i.Metadata = maps.Clone(i.Metadata)
	return i
}

// Validate checks the ID, the address and the weight, and that the record
// fits in one etcd request.
func (i Instance) Validate() error {
	if err := validateSegment(ErrInvalidID, i.ID); err != nil {
		return err
	}
	if err := ValidateAddr(i.Addr); err != nil {
		return err
	}
	if i.Weight < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidWeight, i.Weight)
	}
	if err := names.ValidateValue(string(encodeRecord(i, ""))); err != nil {
		return fmt.Errorf("%w: %v", ErrRecordTooLarge, err)
	}
	return nil
}

// ValidateService checks a service name: non-empty, at most MaxNameBytes,
// valid UTF-8 without NUL or "/", not starting with ".".
func ValidateService(service string) error { return validateSegment(ErrInvalidService, service) }

func validateSegment(kind error, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", kind)
	case len(s) > MaxNameBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", kind, len(s), MaxNameBytes)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("%w: %q is not valid UTF-8 without NUL", kind, s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("%w: %q contains \"/\"", kind, s)
	case strings.HasPrefix(s, "."):
		return fmt.Errorf("%w: %q starts with \".\"", kind, s)
	}
	return nil
}

// ValidateAddr checks that addr is host:port with a non-empty host and a
// numeric port from 1 to 65535.
func ValidateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidAddr, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: %q has no host", ErrInvalidAddr, addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: %q: port must be a number from 1 to 65535", ErrInvalidAddr, addr)
	}
	return nil
}

// servicePrefix is the key prefix of a service's instances.
func servicePrefix(service string) string { return service + "/.instances/" }

func instanceKey(service, id string) string { return servicePrefix(service) + id }

// record is an instance's stored value. Owner names the Registry that wrote
// it, so a Registry can take its own record over after a lost lease.
type record struct {
	Addr     string            `json:"addr"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Weight   int               `json:"weight,omitempty"`
	Draining bool              `json:"draining,omitempty"`
	Owner    string            `json:"owner,omitempty"`
}

func encodeRecord(i Instance, owner string) []byte {
	b, _ := json.Marshal(record{Addr: i.Addr, Metadata: i.Metadata, Weight: i.Weight, Draining: i.Draining, Owner: owner})
	return b
}

func decodeRecord(id string, v []byte) (Instance, string, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return Instance{}, "", err
	}
	return Instance{ID: id, Addr: r.Addr, Metadata: r.Metadata, Weight: r.Weight, Draining: r.Draining}, r.Owner, nil
}
