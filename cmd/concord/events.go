package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/concordkit/concord/concurrency"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// events reports what a hold command does: as text on stderr with -v, as
// JSON lines on stderr with --json (stdout belongs to CMD). A loss is also
// reported as the command's error, so its text line is left to that.
type events struct {
	w       io.Writer
	json    bool
	verbose bool
	res     resource
}

// holdEvent is one line of lock, elect and sem --json.
type holdEvent struct {
	Event string `json:"event"` // waiting, acquired, lost, released, exit
	Kind  string `json:"kind"`  // lock, election, semaphore
	Name  string `json:"name"`
	// acquired
	Token int64  `json:"token,omitempty"`
	Lease string `json:"lease,omitempty"`
	// waiting: who holds it (value, token) and how many are ahead
	Holders []holderJSON `json:"holders,omitempty"`
	Ahead   int          `json:"ahead,omitempty"`
	// lost: why; released: why the release failed, if it did
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// exit
	Command string `json:"command,omitempty"`
	Code    *int   `json:"code,omitempty"`
}

func (e *events) emit(ev holdEvent, text string) {
	ev.Kind, ev.Name = e.res.kind, e.res.name
	switch {
	case e.json:
		_ = writeJSONLine(e.w, ev)
	case e.verbose && text != "":
		fmt.Fprintf(e.w, "concord: %s\n", text)
	}
}

// wanted reports whether anything is reported, so that callers skip the
// reads that only serve a report.
func (e *events) wanted() bool { return e.json || e.verbose }

// waiting reports that the resource is taken: by holders, with ahead keys
// in line before this one.
func (e *events) waiting(holders []holderJSON, ahead int) {
	text := fmt.Sprintf("waiting for %s (%s, %d ahead)", e.res.what, heldBy(holders), ahead)
	e.emit(holdEvent{Event: "waiting", Holders: holders, Ahead: ahead}, text)
}

// heldBy describes the holders: "held by V since revision N".
func heldBy(hs []holderJSON) string {
	if len(hs) == 0 {
		return "no holder"
	}
	if len(hs) == 1 {
		return fmt.Sprintf("held by %s since revision %d", who(hs), hs[0].Token)
	}
	return fmt.Sprintf("held by %s", who(hs))
}

func (e *events) acquired(token concurrency.Token, lease clientv3.LeaseID) {
	l := strconv.FormatInt(int64(lease), 16)
	e.emit(holdEvent{Event: "acquired", Token: int64(token), Lease: l},
		fmt.Sprintf("holding %s (token %d, lease %s)", e.res.what, token, l))
}

func (e *events) lost(reason error) {
	if e.json {
		e.emit(holdEvent{Event: "lost", Reason: fmt.Sprint(reason)}, "")
	}
}

// released reports the release; after a loss, it was an attempt to delete
// a key that is gone or going with its lease.
func (e *events) released(err error, lost bool) {
	switch {
	case err != nil:
		e.emit(holdEvent{Event: "released", Error: err.Error()},
			fmt.Sprintf("releasing %s: %v (its lease will expire)", e.res.what, err))
	case lost:
		e.emit(holdEvent{Event: "released"}, fmt.Sprintf("let go of %s (lost; its key goes with the lease)", e.res.what))
	default:
		e.emit(holdEvent{Event: "released"}, "released "+e.res.what)
	}
}

func (e *events) exited(command string, code int) {
	e.emit(holdEvent{Event: "exit", Command: command, Code: &code}, fmt.Sprintf("%s exited %d", command, code))
}
