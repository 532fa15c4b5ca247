package testtree

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// LogCapture collects a tree's log records (hclog JSON, one per line) so
// tests can assert on them field by field. It is safe for concurrent use.
type LogCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *LogCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// NewLogCapture returns a capture and a debug-level JSON logger writing to it.
func NewLogCapture() (*LogCapture, hclog.Logger) {
	c := &LogCapture{}
	return c, hclog.New(&hclog.LoggerOptions{
		Name: "test", Output: c, Level: hclog.Debug, JSONFormat: true, DisableTime: true,
	})
}

// Find returns the records whose message is msg and whose fields include
// every key of fields with the same value (numbers compared as text).
func (c *LogCapture) Find(t testing.TB, msg string, fields map[string]any) []map[string]any {
	t.Helper()
	c.mu.Lock()
	data := append([]byte(nil), c.buf.Bytes()...)
	c.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		if rec["@message"] != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if got, have := rec[k]; !have || fmt.Sprint(got) != fmt.Sprint(v) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, rec)
		}
	}
	return out
}
