// Command gen rewrites the metrics table of README.md from the table of
// signals: go generate ./internal/signaldoc.
package main

import (
	"fmt"
	"os"

	"github.com/redisconn/redisconn/internal/signaldoc"
)

// readme is README.md seen from internal/signaldoc, where go generate runs.
const readme = "../../README.md"

func main() {
	b, err := os.ReadFile(readme)
	if err == nil {
		b, err = signaldoc.Replace(b)
	}
	if err == nil {
		err = os.WriteFile(readme, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "signaldoc:", err)
		os.Exit(1)
	}
}
