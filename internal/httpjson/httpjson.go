// Package httpjson is the JSON response and error shape shared by cocoon's
// HTTP services (attestation service, key broker, in-pod API).
package httpjson

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
)

// Error is every error body: a type and a detail that says what to do.
type Error struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
	// RequestID names an internal failure in the service's log.
	RequestID string `json:"request_id,omitempty"`
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

// Internal answers a failure of the service itself (its store, its policy
// engine, its signer) without the error's text, which may name paths,
// queries or key material: the caller gets what failed and a request id,
// the log gets the cause under that id.
func Internal(w http.ResponseWriter, log *slog.Logger, what string, err error) {
	id := LogInternal(log, what, err)
	Respond(w, http.StatusInternalServerError, Error{Type: "internal",
		Detail: what + " failed inside the service; retry, and if it persists give its operator the request id", RequestID: id})
}

// LogInternal logs an internal failure with its cause under a fresh request
// id and returns the id, for services whose error bodies have another
// shape than Error (the KBS protocol's, MAA's).
func LogInternal(log *slog.Logger, what string, err error) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	log.Error(what+" failed", "request_id", id, "error", err)
	return id
}
