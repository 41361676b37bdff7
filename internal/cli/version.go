package cli

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"runtime/debug"
)

// Version is bulkhead's version. Release builds set it with
//
//	go build -ldflags "-X github.com/bulkhead/bulkhead/internal/cli.Version=v0.1.0"
//
// Otherwise it comes from the module's build info.
var Version = ""

var pseudoVersion = regexp.MustCompile(`-(0\.)?\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// devVersion names builds between releases.
const devVersion = "v0.1.0-dev"

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print bulkhead's version",
		help:    "Version prints bulkhead's version, and for a development build the commit it was built from, when Go recorded it.",
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			return func(_ context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("version takes no arguments")
				}
				info, _ := debug.ReadBuildInfo()
				fmt.Fprintf(s.out, "bulkhead %s\n", version(Version, info))
				return nil
			}
		},
	}
}

// version picks what to print: the linker-set version, else the module
// version "go install" recorded, else the development version with the VCS
// revision if the build has one.
func version(set string, info *debug.BuildInfo) string {
	if set != "" {
		return set
	}
	if info == nil {
		return devVersion
	}
	// Since Go 1.24, builds inside a checkout get a pseudo-version such as
	// v0.0.0-20260102150405-0123456789ab+dirty; the revision below says the
	// same more plainly.
	if v := info.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return devVersion
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := devVersion + "+" + rev
	if modified == "true" {
		v += ".dirty"
	}
	return v
}
