package scanner

import (
	"fmt"
	"io"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// Formats a report is written in.
var Formats = []string{"table", "json", "openvex", "cyclonedx"}

// Write writes rep in format to w.
func Write(w io.Writer, rep *Report, format string) error {
	switch format {
	case "table":
		return WriteTable(w, rep)
	case "json":
		return writeJSON(w, rep)
	case "openvex":
		doc, err := OpenVEX(rep)
		if err != nil {
			return err
		}
		return doc.ToJSON(w)
	case "cyclonedx":
		return cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON).SetPretty(true).Encode(CycloneDX(rep))
	}
	return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}
