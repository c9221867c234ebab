// Command zookeeper measures lock handoffs on a ZooKeeper server with the
// go-zookeeper lock recipe, as lock's BenchmarkLockContended does on etcd:
// C contenders, each on its own connection, loop Lock -> Unlock until N
// handoffs have happened; a handoff runs from the holder's Unlock call to
// the next holder's Lock return. It prints handoffs/s, handoff p50/p99 and,
// given the server's process ID, the server's CPU per handoff. Run by
// scripts/zookeeper-lock.sh, which starts the server and runs concord's
// benchmark beside it (issue #18). It is its own module so that concord
// does not depend on a ZooKeeper client.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2181", "ZooKeeper address")
	n := flag.Int("n", 3000, "handoffs per run")
	contenders := flag.String("contenders", "2,8,32", "contender counts, one run each")
	pid := flag.Int("pid", 0, "the server's process ID, for its CPU per handoff")
	flag.Parse()
	for _, f := range strings.Split(*contenders, ",") {
		c, err := strconv.Atoi(f)
		if err != nil {
			log.Fatal(err)
		}
		run(*addr, c, *n, *pid)
	}
}

func run(addr string, contenders, n, pid int) {
	path := fmt.Sprintf("/bench-lock-%d-%d", contenders, time.Now().UnixNano())
	var conns []*zk.Conn
	for range contenders {
		c, _, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogInfo(false))
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var (
		acquired   atomic.Int64
		inside     atomic.Int32
		lastUnlock atomic.Int64
		mu         sync.Mutex
		lat        []time.Duration
		start, end time.Time
		wg         sync.WaitGroup
	)
	base := time.Now()
	cpu0 := serverCPU(pid)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := zk.NewLock(c, path, zk.WorldACL(zk.PermAll))
			for {
				if err := l.Lock(); err != nil {
					log.Fatal(err)
				}
				now := time.Since(base)
				if inside.Add(1) != 1 {
					log.Fatal("two holders at once")
				}
				k := acquired.Add(1)
				switch {
				case k == 1:
					start = time.Now()
				case k <= int64(n)+1:
					mu.Lock()
					lat = append(lat, now-time.Duration(lastUnlock.Load()))
					mu.Unlock()
					if k == int64(n)+1 {
						end = time.Now()
					}
				}
				inside.Add(-1)
				lastUnlock.Store(int64(time.Since(base)))
				if err := l.Unlock(); err != nil {
					log.Fatal(err)
				}
				if k > int64(n) {
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := serverCPU(pid) - cpu0
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	el := end.Sub(start)
	fmt.Printf("zookeeper contenders=%d handoffs=%d handoffs/s=%.0f p50-ms=%.2f p99-ms=%.2f", contenders, n, float64(n)/el.Seconds(), q(0.5), q(0.99))
	if pid != 0 {
		fmt.Printf(" server-cpu-ms/handoff=%.3f", float64(cpu.Microseconds())/1000/float64(n))
	}
	fmt.Println()
}

// serverCPU is the process's user+system CPU time from /proc (0 without a
// process ID). It counts from the start of every run, so some of it falls
// outside the timed handoffs: the contenders' connect and lock set-up.
func serverCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
