package policygen

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
)

// Settings are the generator's defaults (a JSON file; `cocoon policy
// settings` prints these).
type Settings struct {
	// EnvPatterns are anchored regexes for variables the platform injects
	// (HOSTNAME, KUBERNETES_*), allowed in every container.
	EnvPatterns []string `json:"env_patterns"`
	// Signals the host may send to containers (stop needs 15 and 9).
	Signals []int `json:"signals"`
	// Exec lists command lines allowed in every container (default none).
	Exec [][]string `json:"exec"`
	// ExecStdin lets the host pass standard input to those commands
	// (default false: an allowed command cannot be fed a script).
	ExecStdin bool `json:"exec_stdin"`
}

//go:embed settings.json
var defaultSettings []byte

// DefaultSettings returns the built-in settings.
func DefaultSettings() *Settings {
	s, err := parseOver(&Settings{}, defaultSettings)
	if err != nil {
		panic("embedded settings: " + err.Error())
	}
	return s
}

// DefaultSettingsJSON is the built-in settings file.
func DefaultSettingsJSON() []byte { return append([]byte{}, defaultSettings...) }

// ParseSettings reads a settings file strictly. A field the file leaves out
// keeps its default (cocoon policy settings prints them): a file that only
// allows an exec still lets the host stop the pod. An explicit empty list
// ([]) clears a default.
func ParseSettings(b []byte) (*Settings, error) {
	return parseOver(DefaultSettings(), b)
}

func parseOver(base *Settings, b []byte) (*Settings, error) {
	s := *base
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("policy settings: %w", err)
	}
	for _, p := range s.EnvPatterns {
		if len(p) < 2 || p[0] != '^' || p[len(p)-1] != '$' {
			return nil, fmt.Errorf("policy settings: env pattern %q must be anchored (^...$)", p)
		}
		if _, err := regexp.Compile(p); err != nil {
			return nil, fmt.Errorf("policy settings: env pattern %q: %w", p, err)
		}
	}
	return &s, nil
}

// LoadSettings reads a settings file, or returns the defaults for "".
func LoadSettings(path string) (*Settings, error) {
	if path == "" {
		return DefaultSettings(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy settings: %w", err)
	}
	return ParseSettings(b)
}
