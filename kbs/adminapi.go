package kbs

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"cocoon.dev/cocoon/kbs/protocol"
)

// admin authenticates a request with a bearer JWT signed by an admin key.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkAdmin(r); err != nil {
			if errors.Is(err, errAdminKeysUnread) {
				s.internal(w, "reading the admin keys", err)
				return
			}
			s.audit(auditLine{Event: "admin", Resource: r.URL.Path, Verdict: "refused", Reason: err.Error()})
			fail(w, ErrAdminAuth, "%v", err)
			return
		}
		h(w, r)
	}
}

var errAdminKeysUnread = errors.New("the admin keys cannot be read")

// adminKeys is the keys admin tokens may be signed with, read for each
// admin request: a key removed through any replica no longer works on any.
func (s *Server) adminKeys(ctx context.Context) ([]AdminKey, error) {
	ks, err := s.cfg.AdminKeys.AdminKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errAdminKeysUnread, err)
	}
	return ks, nil
}

func (s *Server) checkAdmin(r *http.Request) error {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return errors.New("admin requests need a bearer JWT signed by an admin key (STATE/admin.key; cocoon kbs ... --state DIR does this)")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	keys, err := s.adminKeys(r.Context())
	if err != nil {
		return err
	}
	var c jwt.Claims
	signed := false
	for _, k := range keys {
		if tok.Claims(k.Key, &c) == nil {
			signed = true
			break
		}
	}
	if !signed {
		return errors.New("admin token: not signed by an admin key of this broker (cocoon kbs admin-key list shows them)")
	}
	if c.Expiry == nil || c.Expiry.Time().After(time.Now().Add(time.Hour)) {
		return errors.New("admin token: needs an expiry within an hour")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, time.Minute); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	return nil
}

// MarshalAdminPub is the PEM form of an admin public key.
func MarshalAdminPub(k ed25519.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParseAdminPub reads a PEM "PUBLIC KEY" that must be Ed25519.
func ParseAdminPub(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New(`not a PEM "PUBLIC KEY" (cocoon kbs admin-key generate writes one)`)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T public key; admin keys are Ed25519", k)
	}
	return pub, nil
}

func (s *Server) listAdminKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.adminKeys(r.Context())
	if err != nil {
		s.internal(w, "reading the admin keys", err)
		return
	}
	out := []protocol.AdminKey{}
	for _, k := range keys {
		p, err := MarshalAdminPub(k.Key)
		if err != nil {
			s.internal(w, "encoding an admin key", err)
			return
		}
		out = append(out, protocol.AdminKey{Name: k.Name, PublicKey: p, Added: k.Added})
	}
	respond(w, http.StatusOK, out)
}

func (s *Server) addAdminKey(w http.ResponseWriter, r *http.Request) {
	var in protocol.AdminKey
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fail(w, ErrSerde, "the body is not {\"name\", \"public_key\"}: %v", err)
		return
	}
	if err := CheckAdminKeyName(in.Name); err != nil {
		fail(w, ErrSerde, "%v", err)
		return
	}
	pub, err := ParseAdminPub([]byte(in.PublicKey))
	if err != nil {
		fail(w, ErrSerde, "public_key: %v", err)
		return
	}
	if err := s.cfg.AdminKeys.AddAdminKey(r.Context(), in.Name, pub); err != nil {
		s.adminKeyError(w, err)
		return
	}
	s.audit(auditLine{Event: "admin_key_add", Resource: in.Name, Verdict: "stored"})
	respond(w, http.StatusOK, map[string]string{"name": in.Name})
}

func (s *Server) removeAdminKey(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.AdminKeys.RemoveAdminKey(r.Context(), name); err != nil {
		s.adminKeyError(w, err)
		return
	}
	s.audit(auditLine{Event: "admin_key_remove", Resource: name, Verdict: "removed"})
	respond(w, http.StatusOK, map[string]string{"removed": name})
}

func (s *Server) adminKeyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		fail(w, ErrResourceNotFound, "%v", err)
	case errors.Is(err, ErrAdminKeyExists), errors.Is(err, ErrLastAdminKey), errors.Is(err, ErrStaticAdminKeys):
		fail(w, ErrConflict, "%v", err)
	default:
		s.internal(w, "changing the admin keys", err)
	}
}
