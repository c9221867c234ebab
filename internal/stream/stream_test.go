package stream

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStreamDeliversThenClosesWithItsReason(t *testing.T) {
	s := New[int]()
	why := errors.New("done")
	go func() {
		for i := range 3 {
			s.Send(context.Background(), i)
		}
		s.Finish(why)
	}()
	var got []int
	for v := range s.C() {
		// Until the last value is read the producer cannot finish (C is
		// unbuffered).
		if v < 2 && s.Err() != nil {
			t.Fatal("Err set while the stream runs")
		}
		got = append(got, v)
	}
	if len(got) != 3 || got[2] != 2 {
		t.Fatalf("got %v", got)
	}
	<-s.Done()
	if s.Err() != why {
		t.Fatalf("Err = %v, want %v", s.Err(), why)
	}
}

func TestSendEndsWithContext(t *testing.T) {
	s := New[int]()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.Send(ctx, 1) {
		t.Fatal("Send reported delivery with nobody reading and ctx ended")
	}
}
