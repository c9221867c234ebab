package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// view is a rollout's whole state at one revision.
type view struct {
	plan    Plan
	state   stateRecord
	wave    int
	targets map[string]targetRecord
	claimed map[string]int // keys in each target's claim line (held or trying)
	steps   map[string]int // targets' last checkpointed step (-1: none)
	rev     int64
}

// read reads the rollout at one revision: one range over its prefix.
func read(ctx context.Context, client *clientv3.Client, k keys) (*view, error) {
	resp, err := client.Get(ctx, k.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	v := &view{targets: map[string]targetRecord{}, claimed: map[string]int{}, steps: map[string]int{}, rev: resp.Header.Revision}
	found := false
	for _, kv := range resp.Kvs {
		if err := v.add(k, kv); err != nil {
			return nil, err
		}
		found = found || string(kv.Key) == k.plan()
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, k.name)
	}
	return v, nil
}

func (v *view) add(k keys, kv *mvccpb.KeyValue) error {
	key := string(kv.Key)
	var err error
	switch {
	case key == k.plan():
		v.plan, err = decodePlan(kv.Value)
	case key == k.state():
		err = json.Unmarshal(kv.Value, &v.state)
	case key == k.wave():
		v.wave, err = strconv.Atoi(string(kv.Value))
	case strings.HasPrefix(key, k.targets()):
		var t targetRecord
		err = json.Unmarshal(kv.Value, &t)
		v.targets[strings.TrimPrefix(key, k.targets())] = t
	case strings.HasPrefix(key, k.claims()):
		// name/rollout/claims/<id>/.lock/<holder>
		id, _, _ := strings.Cut(strings.TrimPrefix(key, k.claims()), "/")
		v.claimed[id]++ // lock keys are written once, when created
	case strings.HasPrefix(key, k.prefix+"progress/"):
		id, _, _ := strings.Cut(strings.TrimPrefix(key, k.prefix+"progress/"), "/")
		v.steps[id] = parseStep(kv.Value)
	}
	if err != nil {
		return fmt.Errorf("rollout: stored %s: %w", key, err)
	}
	return nil
}

// parseStep reads a checkpoint: the index of the last completed step.
func parseStep(b []byte) int {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return -1
	}
	return n
}

// counts of one wave's targets.
func (v *view) waveCounts(w int) (pending, done, failed int) {
	for _, t := range v.targets {
		if t.Wave != w {
			continue
		}
		switch t.State {
		case stateDone:
			done++
		case stateFailed:
			failed++
		default:
			pending++
		}
	}
	return pending, done, failed
}

func (v *view) failed() (n int) {
	for _, t := range v.targets {
		if t.State == stateFailed {
			n++
		}
	}
	return n
}

// candidates are the pending, unclaimed targets of the open waves, in plan
// order.
func (v *view) candidates() []Target {
	var out []Target
	for w, ts := range v.plan.Waves() {
		if w > v.wave {
			break
		}
		for _, t := range ts {
			if v.targets[t.ID].State == statePending && v.claimed[t.ID] == 0 {
				out = append(out, t)
			}
		}
	}
	return out
}
