package election

import (
	"errors"
	"fmt"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrNoLeader: nobody leads the election now.
	ErrNoLeader = errors.New("election: no leader")
	// ErrNotLeader: the leadership was lost or resigned; Proclaim changed
	// nothing. It matches concurrency.ErrNotHeld.
	ErrNotLeader = fmt.Errorf("election: not leader: %w", concurrency.ErrNotHeld)
	// ErrAlreadyCampaigning: this Election value is campaigning or leads.
	ErrAlreadyCampaigning = errors.New("election: already campaigning or leading")
	// ErrNoCandidacy: Resume found no candidacy under the session's lease.
	ErrNoCandidacy = errors.New("election: no candidacy under this lease")
	// ErrInvalidName: the election name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrValueTooLarge: the value does not fit in one etcd request.
	ErrValueTooLarge = errs.ValueTooLarge
	// ErrInvalidConfig: a Run configuration is incomplete.
	ErrInvalidConfig = errors.New("election: invalid config")
)
