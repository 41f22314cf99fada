package image

import "testing"

func TestMirrored(t *testing.T) {
	const d = "sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"
	for _, tc := range []struct{ ref, mirror, want string }{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "127.0.0.1:5000", "127.0.0.1:5000/e2e-test-images/busybox:1.29-2"},
		{"busybox", "mirror.local", "mirror.local/library/busybox:latest"},
		{"gcr.io/x/y@" + d, "127.0.0.1:5000", "127.0.0.1:5000/x/y@" + d},
		{"oci:/tmp/l:busybox", "127.0.0.1:5000", ""},
		{"busybox", "http://127.0.0.1:5000", ""},
		{"busybox", "127.0.0.1:5000/path", ""},
		{"busybox", "user@host", ""},
		{"busybox", "", ""},
		{"busybox", "Bad Host", ""},
	} {
		got, err := Mirrored(tc.ref, tc.mirror)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Mirrored(%q, %q) = %q, want an error", tc.ref, tc.mirror, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Mirrored(%q, %q) = %q, %v; want %q", tc.ref, tc.mirror, got, err, tc.want)
		}
	}
}
