// Package install puts cocoon's containerd runtime on a node: the shim and
// the agent binaries, and a runtime handler in containerd's configuration,
// added idempotently with the rest of the file kept and a backup written.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// The managed block's markers: what lies between them is cocoon's, rewritten
// on every install; nothing else of the file is touched.
const (
	beginMarker = "# BEGIN cocoon runtime handler %q (managed by `cocoon install containerd`; edits here are replaced)"
	endMarker   = "# END cocoon runtime handler %q"
)

// Handler is the runtime handler to add.
type Handler struct {
	// Name is the handler (the RuntimeClass's handler), e.g. "cocoon".
	Name string
	// ShimPath is containerd-shim-cocoon-v2 as installed.
	ShimPath string
	// Options are the runtime's options (root, isolation, agent, ...), in
	// the order given.
	Options [][2]string
}

// Result says what Containerd did.
type Result struct {
	Config  string `json:"config"`
	Changed bool   `json:"changed"`
	Backup  string `json:"backup,omitempty"`
	// Version is the configuration's schema version.
	Version int `json:"version"`
}

var (
	versionRE = regexp.MustCompile(`(?m)^version\s*=\s*(\d+)\s*$`)
	bareKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	handlerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// Block is the TOML that declares h in a containerd 2.x configuration
// (schema version 3 or later).
func Block(h Handler) string {
	var b strings.Builder
	fmt.Fprintf(&b, beginMarker+"\n", h.Name)
	t := fmt.Sprintf("plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s", quoteKey(h.Name))
	fmt.Fprintf(&b, "[%s]\n", t)
	fmt.Fprintf(&b, "  runtime_type = 'io.containerd.cocoon.v2'\n")
	fmt.Fprintf(&b, "  runtime_path = %s\n", tomlString(h.ShimPath))
	fmt.Fprintf(&b, "  # The pod's policy reaches the runtime as this annotation.\n")
	fmt.Fprintf(&b, "  pod_annotations = ['cocoon.dev/*']\n")
	if len(h.Options) > 0 {
		fmt.Fprintf(&b, "[%s.options]\n", t)
		for _, kv := range h.Options {
			fmt.Fprintf(&b, "  %s = %s\n", kv[0], tomlString(kv[1]))
		}
	}
	fmt.Fprintf(&b, endMarker+"\n", h.Name)
	return b.String()
}

func quoteKey(k string) string {
	if bareKeyRE.MatchString(k) {
		return k
	}
	return tomlString(k)
}

func tomlString(s string) string {
	b, _ := toml.Marshal(map[string]string{"v": s})
	_, v, _ := strings.Cut(strings.TrimSpace(string(b)), " = ")
	return v
}

// Apply adds (or updates) h in the configuration text: the managed block is
// replaced if present, else appended. It refuses a configuration that
// declares the handler outside the block, or one for containerd 1.x.
func Apply(text []byte, h Handler) ([]byte, int, error) {
	if !handlerRE.MatchString(h.Name) {
		return nil, 0, fmt.Errorf("handler name %q: use letters, digits, '.', '_' and '-'", h.Name)
	}
	version := 0
	if m := versionRE.FindSubmatch(text); m != nil {
		fmt.Sscanf(string(m[1]), "%d", &version)
	}
	trimmed := bytes.TrimSpace(text)
	switch {
	case len(trimmed) == 0:
		text, version = []byte("version = 3\n"), 3
	case version == 0 || version < 3:
		return nil, version, fmt.Errorf("containerd configuration version %d is containerd 1.x's; the cocoon runtime needs containerd 2.x (configuration version 3 or later: `containerd config migrate`)", version)
	}
	begin, end := fmt.Sprintf(beginMarker, h.Name), fmt.Sprintf(endMarker, h.Name)
	block := Block(h)
	s := string(text)
	if i := strings.Index(s, begin); i >= 0 {
		j := strings.Index(s[i:], end)
		if j < 0 {
			return nil, version, fmt.Errorf("the configuration has the start of cocoon's block for %q but not its end: restore it from the backup or remove the block", h.Name)
		}
		j += i + len(end)
		if j < len(s) && s[j] == '\n' {
			j++
		}
		s = s[:i] + block + s[j:]
	} else {
		if declares(text, h.Name) {
			return nil, version, fmt.Errorf("the configuration already declares runtime %q outside cocoon's block: remove it, or install under another --handler", h.Name)
		}
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "\n" + block
	}
	// The result must still be one valid TOML document.
	var check map[string]any
	if err := toml.Unmarshal([]byte(s), &check); err != nil {
		return nil, version, fmt.Errorf("the configuration with the cocoon handler is not valid TOML (%w); it was not written", err)
	}
	return []byte(s), version, nil
}

// declares reports whether the configuration defines runtime name.
func declares(text []byte, name string) bool {
	var cfg map[string]any
	if toml.Unmarshal(text, &cfg) != nil {
		return false
	}
	m, ok := dig(cfg, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes")
	if !ok {
		return false
	}
	_, ok = m[name]
	return ok
}

func dig(m map[string]any, keys ...string) (map[string]any, bool) {
	for _, k := range keys {
		n, ok := m[k].(map[string]any)
		if !ok {
			return nil, false
		}
		m = n
	}
	return m, true
}

// Containerd applies h to the configuration file at path (created if
// missing), writing a backup beside it first when it changes.
func Containerd(path string, h Handler, now time.Time) (*Result, error) {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read containerd configuration: %w", err)
	}
	text, version, err := Apply(old, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	res := &Result{Config: path, Version: version}
	if bytes.Equal(text, old) {
		return res, nil
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
		res.Backup = path + ".bak-" + now.UTC().Format("20060102T150405Z")
		if err := os.WriteFile(res.Backup, old, mode); err != nil {
			return nil, fmt.Errorf("write backup: %w", err)
		}
	}
	tmp := path + ".cocoon-tmp"
	if err := os.WriteFile(tmp, text, mode); err != nil {
		return nil, fmt.Errorf("write containerd configuration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write containerd configuration: %w", err)
	}
	res.Changed = true
	return res, nil
}

// CopyFile installs src at dst (mode 0755), atomically: a running shim's
// binary is replaced, not overwritten in place.
func CopyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	tmp := dst + ".cocoon-tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
