package rollout

import (
	"errors"

	"github.com/concordkit/concord/internal/errs"
)

var (
	// ErrInvalidPlan: the plan is malformed (no targets or steps, a limit
	// below 1, a negative budget or wave size, a duplicate or malformed
	// target ID); nothing was written.
	ErrInvalidPlan = errors.New("rollout: invalid plan")
	// ErrInvalidName: the rollout name is empty or malformed.
	ErrInvalidName = errs.InvalidName
	// ErrPlanMismatch: Create found a different plan stored under the name.
	ErrPlanMismatch = errors.New("rollout: a different plan is stored under this name")
	// ErrNotFound: no rollout is stored under the name.
	ErrNotFound = errors.New("rollout: no such rollout")
	// ErrAborted: the rollout was aborted; workers stop.
	ErrAborted = errors.New("rollout: aborted")
	// ErrFinished: Pause or Resume of a rollout that is done or aborted.
	ErrFinished = errors.New("rollout: already done or aborted")
)
