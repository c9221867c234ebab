//go:build !linux

package main

import "syscall"

// childAttr starts CMD in its own process group, so that stopping it stops
// what it started. Outside Linux there is no parent-death signal: if
// concord is killed (kill -9) CMD keeps running after the resource passes
// on, and only a store that checks CONCORD_TOKEN is protected from it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
