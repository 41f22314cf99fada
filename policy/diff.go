package policy

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Diff lists the differing leaves of two policies, a the annotated one and
// b a freshly generated one, as "path: annotated X, fresh Y", sorted.
func Diff(a, b *Policy) []string {
	fa, fb := map[string]string{}, map[string]string{}
	pa, _ := toJSON(a)
	flatten("", pa, fa)
	pb, _ := toJSON(b)
	flatten("", pb, fb)
	keys := map[string]bool{}
	for k := range fa {
		keys[k] = true
	}
	for k := range fb {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		va, oka := fa[k]
		vb, okb := fb[k]
		switch {
		case !oka:
			out = append(out, fmt.Sprintf("%s: not in the annotated policy, fresh %s", k, vb))
		case !okb:
			out = append(out, fmt.Sprintf("%s: annotated %s, not in the fresh policy", k, va))
		case va != vb:
			out = append(out, fmt.Sprintf("%s: annotated %s, fresh %s", k, va, vb))
		}
	}
	sort.Strings(out)
	return out
}

func flatten(prefix string, v any, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if strings.ContainsAny(k, ".:/") {
				p = prefix + "[" + fmt.Sprintf("%q", k) + "]"
			}
			flatten(p, c, out)
		}
	case []any:
		b, _ := json.Marshal(x)
		out[prefix] = string(b)
	default:
		b, _ := json.Marshal(x)
		out[prefix] = string(b)
	}
}
