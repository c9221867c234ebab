package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The recipes' key layouts: a name's keys live under <name>/.<marker>, and
// names have no segment starting with ".", so the first "/." in a key ends
// the name.
const (
	markLock       = "lock"
	markRW         = "rw"
	markSem        = "sem"
	markElection   = "election"
	markQueue      = "q"
	markCheckpoint = "checkpoint"
	markInstances  = "instances" // discovery: SERVICE/.instances/ID
)

type holderJSON struct {
	Value string `json:"value"`
	Token int64  `json:"token"`
	Lease string `json:"lease"`
}

type lockJSON struct {
	Name    string       `json:"name"`
	RW      bool         `json:"rw,omitempty"`
	Holders []holderJSON `json:"holders"`
	Waiters []holderJSON `json:"waiters"`
}

type electionJSON struct {
	Name       string      `json:"name"`
	Leader     *holderJSON `json:"leader"`
	Candidates int         `json:"candidates"`
}

type semJSON struct {
	Name    string       `json:"name"`
	Limit   int          `json:"limit"`
	Holders []holderJSON `json:"holders"`
	Waiters []holderJSON `json:"waiters"`
}

type queueJSON struct {
	Name     string `json:"name"`
	Ready    int    `json:"ready"`
	Delayed  int    `json:"delayed"`
	Claimed  int    `json:"claimed"`
	Orphaned int    `json:"orphaned"`
	Dead     int    `json:"dead"`
}

type checkpointJSON struct {
	Task     string `json:"task"`
	Revision int64  `json:"revision"`
	Progress string `json:"progress"`
}

type serviceJSON struct {
	Name      string         `json:"name"`
	Instances []instanceJSON `json:"instances"`
}

type statusJSON struct {
	Prefix      string           `json:"prefix"`
	Revision    int64            `json:"revision"`
	Locks       []lockJSON       `json:"locks"`
	Elections   []electionJSON   `json:"elections"`
	Semaphores  []semJSON        `json:"semaphores"`
	Queues      []queueJSON      `json:"queues"`
	Checkpoints []checkpointJSON `json:"checkpoints"`
	Services    []serviceJSON    `json:"services"`
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status [PREFIX]",
		Short: "show the locks, elections, semaphores, queues, checkpoints and services under PREFIX",
		Long: `status finds every recipe under PREFIX (every key when it is absent) by its
keys' layout and shows who holds what: lock holders and waiters, election
leaders, semaphore permits against the stored limit, queue counts,
checkpoints and registered service instances.`,
		Args: func(_ *cobra.Command, args []string) error { return positional(args, 0, 1, "") },
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return a.status(cmd.Context(), prefix)
		},
	}
}

func (a *app) status(ctx context.Context, prefix string) error {
	client, err := a.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	st, err := collectStatus(ctx, client, prefix)
	if err != nil {
		return err
	}
	if a.conn.json {
		return writeJSON(a.std.out, st)
	}
	return printStatus(a.std.out, st)
}

// collectStatus finds every recipe under prefix by its keys' layout and
// reads each with its package's Inspect.
func collectStatus(ctx context.Context, client *clientv3.Client, prefix string) (statusJSON, error) {
	// An empty prefix lists every key.
	resp, err := client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return statusJSON{}, err
	}
	st := statusJSON{Prefix: prefix, Revision: resp.Header.Revision,
		Locks: []lockJSON{}, Elections: []electionJSON{}, Semaphores: []semJSON{}, Queues: []queueJSON{}, Checkpoints: []checkpointJSON{},
		Services: []serviceJSON{}}
	found := map[[2]string]int{} // (marker, name) -> keys
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		i := strings.Index(k, "/.")
		if i <= 0 {
			continue
		}
		mark, _, _ := strings.Cut(k[i+2:], "/")
		found[[2]string{mark, k[:i]}]++
	}
	keys := make([][2]string, 0, len(found))
	for k := range found {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][1] < keys[j][1] })
	for _, k := range keys {
		mark, name := k[0], k[1]
		switch mark {
		case markLock, markRW:
			inspect := lock.Inspect
			if mark == markRW {
				inspect = lock.InspectRW
			}
			ls, err := inspect(ctx, client, name)
			if err != nil {
				return st, err
			}
			st.Locks = append(st.Locks, lockJSON{Name: name, RW: mark == markRW, Holders: lockEntries(ls.Holders), Waiters: lockEntries(ls.Waiters)})
		case markSem:
			ss, err := semaphore.Inspect(ctx, client, name)
			if err != nil {
				return st, err
			}
			st.Semaphores = append(st.Semaphores, semJSON{Name: name, Limit: ss.Limit, Holders: semEntries(ss.Holders), Waiters: semEntries(ss.Waiters)})
		case markElection:
			e := electionJSON{Name: name, Candidates: found[k]}
			l, err := election.CurrentLeader(ctx, client, name)
			if err != nil && err != election.ErrNoLeader {
				return st, err
			}
			if err == nil && !l.None() {
				e.Leader = &holderJSON{Value: l.Value, Token: int64(l.Token), Lease: strconv.FormatInt(int64(l.Lease), 16)}
			}
			st.Elections = append(st.Elections, e)
		case markQueue:
			qs, err := queue.Inspect(ctx, client, name)
			if err != nil {
				return st, err
			}
			st.Queues = append(st.Queues, queueJSON{Name: name, Ready: len(qs.Ready), Delayed: len(qs.Delayed), Claimed: len(qs.Claimed), Orphaned: len(qs.Orphaned), Dead: len(qs.Dead)})
		case markCheckpoint:
			p, err := checkpoint.Load(ctx, client, name)
			if err != nil {
				continue // removed meanwhile
			}
			st.Checkpoints = append(st.Checkpoints, checkpointJSON{Task: name, Revision: p.Revision, Progress: string(p.Data)})
		case markInstances:
			if discovery.ValidateService(name) != nil {
				continue // not discovery's: its service names are one key segment
			}
			ins, _, err := listInstances(ctx, client, name)
			if err != nil {
				return st, err
			}
			if len(ins) > 0 {
				st.Services = append(st.Services, serviceJSON{Name: name, Instances: instancesJSON(ins)})
			}
		}
	}
	return st, nil
}

func lockEntries(es []lock.Entry) []holderJSON {
	out := []holderJSON{}
	for _, e := range es {
		out = append(out, holderJSON{Value: e.Value, Token: int64(e.Token), Lease: strconv.FormatInt(int64(e.Lease), 16)})
	}
	return out
}

func semEntries(es []semaphore.Entry) []holderJSON {
	out := []holderJSON{}
	for _, e := range es {
		out = append(out, holderJSON{Value: e.Value, Token: int64(e.Token), Lease: strconv.FormatInt(int64(e.Lease), 16)})
	}
	return out
}

func who(hs []holderJSON) string {
	var names []string
	for _, h := range hs {
		v := h.Value
		if v == "" {
			v = "lease " + h.Lease
		}
		names = append(names, printable([]byte(v)))
	}
	return strings.Join(names, ", ")
}

func printStatus(w io.Writer, st statusJSON) error {
	where := fmt.Sprintf("under %q", st.Prefix)
	if st.Prefix == "" {
		where = "in this etcd"
	}
	if len(st.Locks)+len(st.Elections)+len(st.Semaphores)+len(st.Queues)+len(st.Checkpoints)+len(st.Services) == 0 {
		fmt.Fprintf(w, "no locks, elections, semaphores, queues, checkpoints or services %s (revision %d)\n", where, st.Revision)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(title string, n int) bool {
		if n == 0 {
			return false
		}
		fmt.Fprintf(tw, "%s\n", title)
		return true
	}
	if section("LOCKS", len(st.Locks)) {
		for _, l := range st.Locks {
			name := l.Name
			if l.RW {
				name += " (rw)"
			}
			state := "free"
			if len(l.Holders) > 0 {
				state = fmt.Sprintf("held by %s (token %d)", who(l.Holders), l.Holders[len(l.Holders)-1].Token)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d waiting\n", name, state, len(l.Waiters))
		}
	}
	if section("ELECTIONS", len(st.Elections)) {
		for _, e := range st.Elections {
			state := "no leader"
			if e.Leader != nil {
				state = fmt.Sprintf("led by %s (term %d)", who([]holderJSON{*e.Leader}), e.Leader.Token)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d candidates\n", e.Name, state, e.Candidates)
		}
	}
	if section("SEMAPHORES", len(st.Semaphores)) {
		for _, s := range st.Semaphores {
			state := fmt.Sprintf("%d/%d held", len(s.Holders), s.Limit)
			if len(s.Holders) > 0 {
				state += ": " + who(s.Holders)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d waiting\n", s.Name, state, len(s.Waiters))
		}
	}
	if section("QUEUES", len(st.Queues)) {
		for _, q := range st.Queues {
			fmt.Fprintf(tw, "  %s\t%d ready, %d delayed, %d claimed, %d orphaned\t%d dead\n", q.Name, q.Ready, q.Delayed, q.Claimed, q.Orphaned, q.Dead)
		}
	}
	if section("CHECKPOINTS", len(st.Checkpoints)) {
		for _, c := range st.Checkpoints {
			fmt.Fprintf(tw, "  %s\t%s\t(revision %d)\n", c.Task, printable([]byte(c.Progress)), c.Revision)
		}
	}
	if section("SERVICES", len(st.Services)) {
		for _, sv := range st.Services {
			var ins []string
			for _, in := range sv.Instances {
				d := printable([]byte(in.ID)) + " " + printable([]byte(in.Addr))
				if in.Draining {
					d += " (draining)"
				}
				ins = append(ins, d)
			}
			fmt.Fprintf(tw, "  %s\t%d instance%s\t%s\n", sv.Name, len(sv.Instances), format.Plural(len(sv.Instances)), strings.Join(ins, ", "))
		}
	}
	return tw.Flush()
}
