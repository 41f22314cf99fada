// Package httpjson is the JSON response and error shape shared by cocoon's
// HTTP services (attestation service, key broker, in-pod API).
package httpjson

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is every error body: a type and a detail that says what to do.
type Error struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Respond writes v as JSON with the status code.
func Respond(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Fail writes an Error.
func Fail(w http.ResponseWriter, code int, typ, format string, args ...any) {
	Respond(w, code, Error{Type: typ, Detail: fmt.Sprintf(format, args...)})
}
