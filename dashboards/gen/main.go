// Command gen writes the dashboard JSON: go generate ./dashboards.
package main

import (
	"fmt"
	"os"

	"github.com/redisconn/redisconn/dashboards"
)

func main() {
	b, err := dashboards.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(dashboards.File, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
}
