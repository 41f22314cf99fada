package kbs

import (
	"errors"
	"fmt"
	"net/http"

	"cocoon.dev/cocoon/internal/httpjson"
)

// ErrorTypePrefix starts every error type the broker answers with: the KBS
// protocol's RFC 7807 problem types, as Trustee names them
// (kbs/src/error.rs), so a stock client reads our refusals as Trustee's.
const ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"

// The problem types, with the status Trustee answers for each: 401 for
// everything a client did wrong or was refused, 404 for a path that names
// nothing. Cocoon adds ResourceNotFound (404, as the protocol text asks for
// a resource that does not exist), PayloadTooLarge (413) and Conflict (409:
// an admin change the state refuses).
const (
	ErrAdminAuth        = "AdminAuthAccess"
	ErrAttestation      = "AttestationError"
	ErrInvalidPath      = "InvalidRequestPath"
	ErrJwe              = "JweError"
	ErrPluginNotFound   = "PluginNotFound"
	ErrPolicyDeny       = "PolicyDeny"
	ErrSerde            = "SerdeError"
	ErrTokenNotFound    = "TokenNotFound"
	ErrTokenVerifier    = "TokenVerifierError"
	ErrResourceNotFound = "ResourceNotFound"
	ErrPayloadTooLarge  = "PayloadTooLarge"
	ErrParsePolicy      = "ParsePolicyError"
	ErrBusy             = "ServiceBusy"
	ErrInternal         = "InternalError"
	ErrConflict         = "Conflict"
)

// statusOf is the status Trustee answers a problem type with.
func statusOf(typ string) int {
	switch typ {
	case ErrInvalidPath, ErrPluginNotFound, ErrResourceNotFound:
		return http.StatusNotFound
	case ErrPayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case ErrInternal:
		return http.StatusInternalServerError
	case ErrBusy:
		return http.StatusServiceUnavailable
	case ErrConflict:
		return http.StatusConflict
	}
	return http.StatusUnauthorized
}

// fail answers a problem: {"type": "<prefix><typ>", "detail": "..."} with
// the status Trustee gives it.
func fail(w http.ResponseWriter, typ, format string, args ...any) {
	httpjson.Respond(w, statusOf(typ), Error{Type: ErrorTypePrefix + typ, Detail: fmt.Sprintf(format, args...)})
}

// internal answers a failure of the broker itself without the error's
// text (it may name paths, queries or key material): the caller gets what
// failed and a request id, the log gets the cause under that id.
func (s *Server) internal(w http.ResponseWriter, what string, err error) {
	id := httpjson.LogInternal(s.log, what, err)
	httpjson.Respond(w, http.StatusInternalServerError, Error{Type: ErrorTypePrefix + ErrInternal,
		Detail: what + " failed inside the service; retry, and if it persists give its operator the request id", RequestID: id})
}

// bodyFail answers a request body that could not be read: 413 when it was
// too large, else typ.
func bodyFail(w http.ResponseWriter, typ string, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		fail(w, ErrPayloadTooLarge, "the body is larger than %d bytes", mbe.Limit)
		return
	}
	fail(w, typ, "%v", err)
}
