// Package envflag lets every flag of rollkeeper's binaries come from the environment, one way
// for both: ROLLKEEPER_<FLAG>, upper case, dashes as underscores (--zk-servers is
// ROLLKEEPER_ZK_SERVERS). The command line wins.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Prefix starts every flag's variable.
const Prefix = "ROLLKEEPER_"

// Name is the environment variable of a flag.
func Name(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets every flag of fs that has a variable in the environment (lookup: os.LookupEnv).
// Call it before fs.Parse, so the command line overrides the environment. A value the flag
// refuses is an error naming the variable.
func Apply(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := Name(f.Name)
		if v, ok := lookup(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
