package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// newFlags returns a flag set for one subcommand whose errors go to w and
// are returned (not printed twice, not exiting).
func newFlags(name, usage string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("concord "+name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: concord %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// flagSet is a subcommand's flag set.
type flagSet = flag.FlagSet

// parseArgs parses flags anywhere among the positional arguments (so
// "sem NAME --limit 3 -- CMD" works) and splits off the command after the
// first "--". It returns the positional arguments and the command.
func parseArgs(fs *flag.FlagSet, args []string) (pos, cmd []string, err error) {
	for i, a := range args {
		if a == "--" {
			args, cmd = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, errHelp
			}
			return nil, nil, &exitError{code: exitUsage, err: errSilent}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, cmd, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, min, max int, what string) error {
	if len(pos) < min {
		return usagef("missing %s", what)
	}
	if max >= 0 && len(pos) > max {
		return usagef("unexpected argument %q", strings.Join(pos[max:], " "))
	}
	return nil
}
