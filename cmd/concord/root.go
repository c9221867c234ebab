package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// app is one run of the CLI: its standard streams and the connection flags
// every command shares.
type app struct {
	std  stdio
	conn connFlags
}

const rootLong = `concord runs etcd coordination recipes from the shell: run a command while
holding a lock, a leadership or a semaphore permit; push and claim work-queue
items; register and find service instances; watch keys and topics; show what
is held. 'concord demo' shows them at work in a simulated fleet, and
'concord dev' runs an etcd to try them on; neither needs an etcd installed.`

const rootExample = `  concord demo                       # the rollout demo, on an embedded etcd
  concord dev &                      # an embedded etcd; it prints its endpoint
  export ETCD_ENDPOINTS=http://127.0.0.1:PORT
  concord lock deploy -- make release
  concord services register api api-1 127.0.0.1:8080 --meta zone=a &
  concord services watch api
  concord status`

// envHelp says where the connection flags' defaults come from.
const envHelp = `Environment (used when the flag is not given):
  ETCD_ENDPOINTS (or ETCDCTL_ENDPOINTS)   --endpoints
  ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_USER, ETCDCTL_PASSWORD,
  ETCDCTL_DIAL_TIMEOUT                    the flags of those names, as etcdctl reads them
`

// helpTemplate is cobra's default, with the environment and the exit
// statuses at the end of the top-level help.
const helpTemplate = `{{with (or .Long .Short)}}{{. | trimTrailingWhitespaces}}

{{end}}{{if or .Runnable .HasSubCommands}}{{.UsageString}}{{end}}{{if not .HasParent}}
` + envHelp + `
` + exitTable + `
{{end}}`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "concord",
		Short:         "coordination recipes over etcd, from the shell",
		Long:          rootLong,
		Example:       rootExample,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          subcommandArgs("command", ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// No command: the help, on stderr, and a usage status.
			cmd.SetOut(a.std.err)
			_ = cmd.Help()
			return &exitError{code: exitUsage, err: errSilent}
		},
	}
	root.SetIn(a.std.in)
	root.SetOut(a.std.out)
	root.SetErr(a.std.err)
	root.SetHelpTemplate(helpTemplate)
	root.SetFlagErrorFunc(flagError)
	a.conn.register(root.PersistentFlags())
	root.AddCommand(a.demoCmd(), a.devCmd(), a.lockCmd(), a.electCmd(), a.semCmd(),
		a.queueCmd(), a.servicesCmd(), a.watchCmd(), a.statusCmd(), a.uiCmd(), a.rolloutCmd(), a.benchCmd())
	return root
}

// group is a command that only holds subcommands (queue, services).
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	names := make([]string, 0, len(subs))
	for _, s := range subs {
		names = append(names, s.Name())
	}
	want := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  subcommandArgs(use+" subcommand", want),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("missing %s subcommand: %s", use, want)
		},
	}
	c.AddCommand(subs...)
	return c
}

// subcommandArgs rejects an unknown subcommand with a suggestion.
func subcommandArgs(what, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown %s %q", what, args[0])
		if want != "" {
			msg += ": want " + want
		}
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usagef("%s", msg)
	}
}

// flagError turns a flag parsing error into a usage error, suggesting the
// nearest flag for an unknown one.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		if s := nearestFlag(cmd, name); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
	}
	return usagef("%s", msg)
}

// nearestFlag is the flag of cmd whose name is within two edits of name,
// or starts with it; "" if none is.
func nearestFlag(cmd *cobra.Command, name string) string {
	best, bestD := "", 3
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		d := editDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// positional checks the number of positional arguments (before any "--").
func positional(args []string, min, max int, what string) error {
	if len(args) < min {
		return usagef("missing %s", what)
	}
	if max >= 0 && len(args) > max {
		return usagef("unexpected argument %q", strings.Join(args[max:], " "))
	}
	return nil
}

// splitDash splits cobra's args at "--": the positional arguments and the
// command to run.
func splitDash(cmd *cobra.Command, args []string) (pos, argv []string) {
	if i := cmd.ArgsLenAtDash(); i >= 0 {
		return args[:i], args[i:]
	}
	return args, nil
}
