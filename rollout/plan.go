package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"

	"github.com/concordkit/concord/barrier"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Plan is what a rollout does: every step, in order, on every target, with
// at most MaxInFlight targets in progress at once. Canary targets form the
// first wave; the others follow in waves of WaveSize (0: one wave), each
// wave opened by the coordinator only once every target of the previous
// one is done or failed. When more than FailureBudget targets have failed,
// the rollout pauses.
type Plan struct {
	Targets       []Target `json:"targets"`
	Steps         []string `json:"steps"`
	MaxInFlight   int      `json:"max_in_flight"`
	WaveSize      int      `json:"wave_size,omitempty"`
	FailureBudget int      `json:"failure_budget"`
}

// Target is one host (or anything a step acts on). IDs are single key
// segments, unique in the plan.
type Target struct {
	ID     string `json:"id"`
	Canary bool   `json:"canary,omitempty"`
}

func (p Plan) validate() error {
	switch {
	case len(p.Targets) == 0:
		return fmt.Errorf("%w: no targets", ErrInvalidPlan)
	case len(p.Steps) == 0:
		return fmt.Errorf("%w: no steps", ErrInvalidPlan)
	case p.MaxInFlight < 1:
		return fmt.Errorf("%w: MaxInFlight %d, want at least 1", ErrInvalidPlan, p.MaxInFlight)
	case p.WaveSize < 0 || p.FailureBudget < 0:
		return fmt.Errorf("%w: negative WaveSize or FailureBudget", ErrInvalidPlan)
	}
	seen := map[string]bool{}
	for _, t := range p.Targets {
		if err := names.Validate(t.ID); err != nil || seen[t.ID] || containsSlash(t.ID) {
			return fmt.Errorf("%w: target ID %q (IDs are unique single key segments)", ErrInvalidPlan, t.ID)
		}
		seen[t.ID] = true
	}
	return nil
}

func containsSlash(s string) bool {
	for _, r := range s {
		if r == '/' {
			return true
		}
	}
	return false
}

// Waves returns the plan's targets by wave: the canaries first, then the
// rest in plan order, WaveSize at a time.
func (p Plan) Waves() [][]Target {
	var waves [][]Target
	var canaries, rest []Target
	for _, t := range p.Targets {
		if t.Canary {
			canaries = append(canaries, t)
		} else {
			rest = append(rest, t)
		}
	}
	if len(canaries) > 0 {
		waves = append(waves, canaries)
	}
	size := p.WaveSize
	if size == 0 {
		size = len(rest)
	}
	for i := 0; i < len(rest); i += size {
		waves = append(waves, rest[i:min(i+size, len(rest))])
	}
	return waves
}

// keys of one rollout; every key lives under prefix.
type keys struct {
	name, prefix string
}

func keysOf(name string) keys { return keys{name: name, prefix: name + "/rollout/"} }

// Control keys (the plan, the state, the open wave, the targets' records)
// live under ctl/; the recipes' keys beside them.
func (k keys) ctl() string               { return k.prefix + "ctl/" }
func (k keys) plan() string              { return k.prefix + "ctl/plan" }
func (k keys) state() string             { return k.prefix + "ctl/state" }
func (k keys) wave() string              { return k.prefix + "ctl/wave" }
func (k keys) targets() string           { return k.prefix + "ctl/t/" }
func (k keys) target(id string) string   { return k.prefix + "ctl/t/" + id }
func (k keys) claims() string            { return k.prefix + "claims/" }
func (k keys) claim(id string) string    { return k.prefix + "claims/" + id }               // a lock name
func (k keys) slots() string             { return k.prefix + "slots" }                      // a semaphore name
func (k keys) progress(id string) string { return k.prefix + "progress/" + id }             // a checkpoint task
func (k keys) gate(wave int) string      { return k.prefix + "wave-" + strconv.Itoa(wave) } // a barrier name

// targetRecord is a target's stored state.
type targetRecord struct {
	State string `json:"state"` // pending, done or failed
	Wave  int    `json:"wave"`
	Error string `json:"error,omitempty"`
	// Token is the fencing token (the claim's) under which it ended.
	Token concurrency.Token `json:"token,omitempty"`
}

// Target states as stored.
const (
	statePending = "pending"
	stateDone    = "done"
	stateFailed  = "failed"
)

// stateRecord is the rollout's control state.
type stateRecord struct {
	State  string `json:"state"` // running, paused, aborted or done
	Reason string `json:"reason,omitempty"`
	// Forgiven is how many failures the budget no longer counts: those
	// there were when an operator last resumed the rollout.
	Forgiven int `json:"forgiven,omitempty"`
}

// Rollout states.
const (
	Running = "running"
	Paused  = "paused"
	Aborted = "aborted"
	Done    = "done"
)

// maxTxnOps is how many writes Create puts in one transaction: below
// etcd's default limit (--max-txn-ops 128).
const maxTxnOps = 100

// Create stores plan under name, every target pending, wave 0 open and the
// gates of the later waves held. It is idempotent: creating the same plan
// again changes nothing; a different plan under the name fails with
// ErrPlanMismatch. Create a rollout from one place: two Creates of
// different plans racing under one name may mix their targets' records.
func Create(ctx context.Context, client *clientv3.Client, name string, plan Plan) error {
	if err := names.Validate(name); err != nil {
		return err
	}
	if err := plan.validate(); err != nil {
		return err
	}
	k := keysOf(name)
	raw, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	// The targets' records and the gates first, then the plan: readers
	// see a rollout only once its plan is stored, and a Create interrupted
	// before that is simply done again.
	absent := clientv3.Compare(clientv3.CreateRevision(k.plan()), "=", 0)
	if err := putRecords(ctx, client, k, plan, absent); err != nil {
		return err
	}
	ops := []clientv3.Op{
		clientv3.OpPut(k.plan(), string(raw)),
		clientv3.OpPut(k.state(), mustJSON(stateRecord{State: Running})),
		clientv3.OpPut(k.wave(), "0"),
	}
	resp, err := client.Txn(ctx).If(absent).
		Then(ops...).Else(clientv3.OpGet(k.plan())).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		return nil
	}
	stored, err := decodePlan(resp.Responses[0].GetResponseRange().Kvs[0].Value)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(stored, plan) {
		return fmt.Errorf("%w: %s", ErrPlanMismatch, name)
	}
	return nil
}

// putRecords writes every target's pending record and the gates of the
// later waves, while absent holds, in batches below etcd's limit of
// operations per transaction.
func putRecords(ctx context.Context, client *clientv3.Client, k keys, plan Plan, absent clientv3.Cmp) error {
	var batch []clientv3.Op
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := client.Txn(ctx).If(absent).Then(batch...).Commit()
		batch = batch[:0]
		return err
	}
	for w, targets := range plan.Waves() {
		for _, t := range targets {
			batch = append(batch, clientv3.OpPut(k.target(t.ID), mustJSON(targetRecord{State: statePending, Wave: w})))
			if len(batch) == maxTxnOps {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if w > 0 {
			batch = append(batch, clientv3.OpPut(barrier.Key(k.gate(w)), ""))
		}
		if len(batch) >= maxTxnOps-1 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func decodePlan(raw []byte) (Plan, error) {
	var p Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return Plan{}, fmt.Errorf("rollout: stored plan: %w", err)
	}
	return p, nil
}

// mustJSON encodes the plain records above, which cannot fail to encode.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
