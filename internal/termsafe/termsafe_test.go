package termsafe

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain path", "/usr/lib/libssl.so.3", "/usr/lib/libssl.so.3"},
		{"space and unicode", "/app/données été.txt", "/app/données été.txt"},
		{"clear screen", "/tmp/\x1b[2J", `"/tmp/\x1b[2J"`},
		{"newline", "/tmp/a\nfake line", `"/tmp/a\nfake line"`},
		{"carriage return", "ok\rEVIL", `"ok\rEVIL"`},
		{"right-to-left override", "/tmp/\u202egnp.exe", `"/tmp/\u202egnp.exe"`},
		{"invalid utf-8", "/tmp/\xff", `"/tmp/\xff"`},
		{"C1 CSI", "a\u009b2Jb", `"a\u009b2Jb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, String(tc.in))
		})
	}
}

func TestText(t *testing.T) {
	require.Equal(t, "line one\n\tline two", Text("line one\n\tline two"))
	require.Equal(t, `finding /tmp/\x1b[2J\r in the image`, Text("finding /tmp/\x1b[2J\r in the image"))
	require.Equal(t, `bad \xff byte`, Text("bad \xff byte"))
}
