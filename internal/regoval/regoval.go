// Package regoval converts Go documents to OPA values quickly.
package regoval

import (
	"encoding/json"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Plain turns a Go value into its JSON shape (maps, slices, strings,
// numbers, booleans), as a rule or a diff wants to see it.
func Plain(v any) any {
	b, _ := json.Marshal(v)
	var g any
	_ = json.Unmarshal(b, &g)
	return g
}

// FromGo converts a document of maps, slices, strings, booleans, numbers
// and nulls (as JSON decoding and cocoon's input builders make them) to an
// OPA value without reflection.
func FromGo(v any) (ast.Value, error) {
	switch x := v.(type) {
	case map[string]any:
		terms := make([][2]*ast.Term, 0, len(x))
		for k, e := range x {
			ev, err := FromGo(e)
			if err != nil {
				return nil, err
			}
			terms = append(terms, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(ev)})
		}
		return ast.NewObject(terms...), nil
	case []any:
		terms := make([]*ast.Term, len(x))
		for i, e := range x {
			ev, err := FromGo(e)
			if err != nil {
				return nil, err
			}
			terms[i] = ast.NewTerm(ev)
		}
		return ast.NewArray(terms...), nil
	case string:
		return ast.String(x), nil
	case bool:
		return ast.Boolean(x), nil
	case int:
		return ast.Number(strconv.Itoa(x)), nil
	case int64:
		return ast.Number(strconv.FormatInt(x, 10)), nil
	case float64:
		return ast.Number(strconv.FormatFloat(x, 'g', -1, 64)), nil
	case nil:
		return ast.Null{}, nil
	}
	return ast.InterfaceToValue(v)
}
