package proxy

// TrimCount returns how many times the process returned memory after a
// burst of idle flows.
func TrimCount() int64 { return memTrim.trims.Load() }
