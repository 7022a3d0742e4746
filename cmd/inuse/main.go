// Command inuse is the CLI and server of inuse: it scans images, joins
// their runtime profiles with their vulnerabilities, and serves the verdicts.
package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/inuse-dev/inuse/internal/cliapp"
)

// commands of inuse; each lives in its own file.
var commands = []*cli.Command{profileCommand, scanCommand, dbCommand, enrichCommand, serveCommand, tokenCommand}

func main() {
	cliapp.Main(cliapp.New("inuse", "which vulnerable packages of a container image are actually in use", commands), os.Args)
}
