package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/as"
	asclient "cocoon.dev/cocoon/as/client"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/serving"
	"cocoon.dev/cocoon/sandbox"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
	"cocoon.dev/cocoon/token"
)

func newASCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "as",
		Short: "The attestation service: verify evidence, issue signed tokens",
	}
	var (
		listen, state, refs, cert, key, issuer, simRoots, store string
		trustSim, offline, noNonce                              bool
		ttl                                                     time.Duration
	)
	serve := &cobra.Command{
		Use:   "serve --listen ADDR --state DIR",
		Short: "Serve the attestation service",
		Long: `Serve the attestation service over HTTP (HTTPS with --tls-cert/--tls-key):

  POST /challenge                      a fresh nonce (single use, 5 minutes)
  POST /attestation                    verify evidence, appraise, return {"token": JWT}
  POST /attest/SevSnpVm?api-version=2022-08-01
                                       Microsoft Azure Attestation's SEV-SNP request:
                                       a token with MAA's claim names (x-ms-...)
  GET  /.well-known/jwks.json, /certs  the token signing keys
  GET  /.well-known/openid-configuration
  GET  /healthz, GET /metrics          (Prometheus)
  GET|PUT /admin/reference-values      (Bearer STATE/admin-token)
  POST /admin/rotate-key               (Bearer STATE/admin-token)

STATE keeps the signing keys (0600) and the admin token (0600), created on first
use. Tokens are EAR JWTs (ES256) whose status is affirming, warning or
contraindicated according to the reference values (docs/attestation-service.md).`,
		Example: `  cocoon as serve --listen 127.0.0.1:8080 --state /var/lib/cocoon-as --trust-sim --reference-values refs.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state == "" {
				return errors.New("--state DIR is required")
			}
			if err := os.MkdirAll(state, 0o700); err != nil {
				return err
			}
			signer, err := token.NewSigner(filepath.Join(state, "token-keys.json"), jose.ES256, ttl)
			if err != nil {
				return err
			}
			admin, err := adminToken(filepath.Join(state, "admin-token"))
			if err != nil {
				return err
			}
			scheme := "http"
			if cert != "" {
				scheme = "https"
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			if issuer == "" {
				issuer = scheme + "://" + l.Addr().String()
			}
			cfg := as.Config{Signer: signer, Issuer: issuer, AdminToken: admin, Version: Version, AllowNoNonce: noNonce,
				Verify: attest.Options{Offline: offline, CacheDir: filepath.Join(state, "cache")},
				Logger: slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))}
			if trustSim {
				if cfg.Verify.SimRoots, err = simRootsFor(g, simRoots); err != nil {
					return fmt.Errorf("--trust-sim: %w", err)
				}
				cfg.Verify.TrustSim = true
			}
			if refs != "" {
				if cfg.Reference, err = attest.LoadReferenceValues(refs); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			switch {
			case strings.HasPrefix(store, "postgres://"), strings.HasPrefix(store, "postgresql://"):
				n, err := as.OpenPGNonces(ctx, store, 0, nil)
				if err != nil {
					return err
				}
				defer n.Close()
				keys, err := n.Keys([]byte(admin))
				if err != nil {
					return err
				}
				cfg.Nonces, cfg.Keys = n, keys
			case store != "":
				return errors.New("--store takes a postgres:// URL (without it, nonces live in this process)")
			}
			svc, err := as.New(ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "cocoon as: serving on %s://%s (issuer %s)", scheme, l.Addr(), issuer)
			if trustSim {
				fmt.Fprint(cmd.ErrOrStderr(), "; TRUSTING THE SIMULATED TEE (development only)")
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			return serving.Serve(ctx, l, svc.Handler(), cert, key)
		},
	}
	f := serve.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&state, "state", "", "state directory (keys, admin token)")
	f.StringVar(&refs, "reference-values", "", "reference values file (YAML or JSON)")
	f.StringVar(&cert, "tls-cert", "", "TLS certificate (PEM)")
	f.StringVar(&key, "tls-key", "", "TLS key (PEM)")
	f.StringVar(&issuer, "issuer", "", "issuer URL written into tokens (default: the listen URL)")
	f.BoolVar(&trustSim, "trust-sim", false, "accept evidence from the simulated TEE (INSECURE, development only)")
	f.StringVar(&simRoots, "sim-roots", "", "the simulated TEE's roots (default: SIM_STATE/roots.pem)")
	f.BoolVar(&offline, "offline", false, "no AMD KDS / Intel PCS fetches and no CRL checks")
	f.BoolVar(&noNonce, "allow-no-nonce", false, "accept evidence that binds no nonce (captured evidence); its tokens prove no freshness")
	f.StringVar(&store, "store", os.Getenv("COCOON_AS_STORE"), "a postgres:// URL where replicas share their challenges' nonces (each used once across them) and publish their signing keys (every replica's JWKS lists all; replicas must share STATE/admin-token, which authenticates the entries) (env COCOON_AS_STORE, which keeps a password out of the process list); default: in this process")
	f.DurationVar(&ttl, "token-ttl", 5*time.Minute, "lifetime of issued tokens")
	cmd.AddCommand(serve)
	return cmd
}

// adminToken reads the admin token, creating it (0600) on first use.
func adminToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	t := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", err
	}
	return t, nil
}

// attestWithAS gets a token for a running sandbox from an attestation
// service. The agent binds the service's nonce itself ({"nonce": N}), so the
// token carries no TEE key.
func attestWithAS(ctx context.Context, g *globals, podName, url string, out io.Writer) error {
	c := &asclient.Client{URL: url}
	nonce, err := c.Challenge(ctx)
	if err != nil {
		return err
	}
	cl, err := g.Root().Dial(ctx, podName)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.GetEvidence(ctx, &agentv1.GetEvidenceRequest{RuntimeData: []byte(nonce), Binding: agentv1.EvidenceBinding_ATTESTATION_SERVICE_NONCE})
	if err != nil {
		return fmt.Errorf("evidence from %s: %s", podName, sandbox.Message(err))
	}
	var ev tee.Evidence
	if err := json.Unmarshal(resp.GetEvidence(), &ev); err != nil {
		return fmt.Errorf("the agent sent malformed evidence: %w", err)
	}
	res, err := c.Attest(ctx, &asclient.Attestation{
		TEE: string(ev.TEE), Evidence: base64.RawURLEncoding.EncodeToString(resp.GetEvidence()), Nonce: nonce,
		RuntimeData: map[string]any{"structured": map[string]any{"nonce": nonce}},
	})
	if err != nil {
		return err
	}
	if g.json() {
		return printJSON(out, res)
	}
	fmt.Fprintln(out, res.Token)
	return nil
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Work with attestation result tokens"}
	var jwks, issuer, audience, nonce string
	verify := &cobra.Command{
		Use:   "verify JWT --jwks URL|FILE",
		Short: "Verify an attestation token and print its claims",
		Long: `Verify a token's signature with the issuer's keys (a JWKS URL or file), its
expiry, profile and, when given, issuer, audience and nonce. Prints the claims
and exits 0 only for a valid token. JWT may be - for standard input. A valid
token can still say "contraindicated": read ear.status.`,
		Example: `  cocoon token verify "$(cocoon attest hello --as http://127.0.0.1:8080)" --jwks http://127.0.0.1:8080/.well-known/jwks.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw := args[0]
			if raw == "-" {
				b, err := io.ReadAll(io.LimitReader(os.Stdin, token.MaxTokenBytes+1))
				if err != nil {
					return err
				}
				raw = string(b)
			}
			if jwks == "" {
				return &exitError{2, "--jwks URL|FILE is required"}
			}
			ear, err := token.Verify(cmd.Context(), raw, token.VerifyOptions{JWKS: jwks, Issuer: issuer, Audience: audience, Nonce: nonce})
			if err != nil {
				return &exitError{1, err.Error()}
			}
			if !g.json() {
				cpu := ear.CPU()
				fmt.Fprintf(cmd.ErrOrStderr(), "valid token from %s: %s (%s)\n", ear.Issuer, cpu.Status, cpu.Evidence.TEE)
			}
			return printJSON(cmd.OutOrStdout(), ear)
		},
	}
	verify.Flags().StringVar(&jwks, "jwks", "", "the issuer's keys: a URL or a file")
	verify.Flags().StringVar(&issuer, "issuer", "", "required issuer")
	verify.Flags().StringVar(&audience, "audience", "", "required audience")
	verify.Flags().StringVar(&nonce, "nonce", "", "required eat_nonce")
	cmd.AddCommand(verify)
	return cmd
}

// simRootsFor reads the simulated TEE's roots from path, or from this
// machine's simulated secure processor (created if it does not exist yet,
// so a service can start before the first sandbox).
func simRootsFor(g *globals, path string) ([]byte, error) {
	if path != "" {
		return os.ReadFile(path)
	}
	a, err := sim.LoadOrCreate(g.sim())
	if err != nil {
		return nil, err
	}
	return a.RootsPEM(), nil
}
