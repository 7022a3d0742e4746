package scanner

import (
	"encoding/json"
	"io"
)

// writeJSON writes rep as indented JSON: the report's own schema.
func writeJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
