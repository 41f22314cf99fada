package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
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

	"cocoon.dev/cocoon/as"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/serving"
	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policygen"
	"cocoon.dev/cocoon/token"
)

type kbsAdminFlags struct {
	state, url, adminKey, ca string
}

func (f *kbsAdminFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.state, "state", "", "the broker's state directory (URL, admin key and CA from it)")
	c.Flags().StringVar(&f.url, "kbs", "", "broker URL (without --state)")
	c.Flags().StringVar(&f.adminKey, "admin-key", "", "admin key file (without --state)")
	c.Flags().StringVar(&f.ca, "ca", "", "CA certificate of the broker (without --state)")
}

// resource parses a kbs:/// URI and returns the admin client with its path.
func (f *kbsAdminFlags) resource(uri string) (*client.Admin, string, error) {
	r, t, tag, err := protocol.ParseURI(uri)
	if err != nil {
		return nil, "", err
	}
	a, err := f.admin()
	return a, r + "/" + t + "/" + tag, err
}

func (f *kbsAdminFlags) admin() (*client.Admin, error) {
	url, keyPath, caPath := f.url, f.adminKey, f.ca
	if f.state != "" {
		cfg, err := kbs.LoadConfig(f.state)
		if err != nil {
			return nil, err
		}
		if url == "" {
			url = cfg.URL
		}
		if keyPath == "" {
			keyPath = filepath.Join(f.state, kbs.FileAdminKey)
		}
		if caPath == "" {
			caPath = filepath.Join(f.state, kbs.FileCA)
		}
	}
	if url == "" || keyPath == "" {
		return nil, errors.New("give --state DIR, or --kbs URL with --admin-key FILE (and --ca FILE)")
	}
	key, err := kbs.LoadAdminKey(keyPath)
	if err != nil {
		return nil, err
	}
	var ca []byte
	if caPath != "" {
		if ca, err = os.ReadFile(caPath); err != nil {
			return nil, err
		}
	}
	hc, err := client.HTTPClient(ca, nil)
	if err != nil {
		return nil, err
	}
	return &client.Admin{URL: url, HTTP: hc, Key: key}, nil
}

func newKBSCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "The key broker: release secrets only to attested workloads",
		Long: `The key broker speaks the Confidential Containers KBS protocol (v0.4.0). It
releases a resource only to a workload whose attestation satisfies the release
policy, encrypted to a key that exists only inside the workload's TEE.

  cocoon kbs init --state DIR                       keys, TLS certificate, master key
  cocoon kbs serve --state DIR --listen ADDR        serve (HTTPS)
  cocoon kbs put kbs:///repo/type/tag FILE --state DIR [--one-shot]   (a new version)
  cocoon kbs get|rm kbs:///repo/type/tag --state DIR [--version N]
  cocoon kbs versions kbs:///repo/type/tag --state DIR
  cocoon kbs disable|enable kbs:///repo/type/tag --version N --state DIR
  cocoon kbs ls --state DIR
  cocoon kbs rotate-master --prepare|--commit|--finish --state DIR, cocoon kbs reseal
  cocoon kbs admin-key generate|add|rm|list     several admins (PostgreSQL store)
  cocoon kbs audit [-n LINES]                   the replicas' shared audit log
  cocoon kbs seal kbs:///repo/type/tag          a sealed secret for a pod env value

A resource has numbered versions: put makes the next one, a release takes the
newest one not disabled (or, with ?version=N, that one). Rotate a secret by
putting its new value; disable the old version once nothing needs it. A
--one-shot version is released once, to the first workload allowed it.
  cocoon kbs policy get|set [FILE] --state DIR`,
	}
	var listen, kube string
	initCmd := &cobra.Command{
		Use:   "init --state DIR [--listen ADDR] [--kubernetes FILE]",
		Short: "Create a broker's keys, TLS certificate and master key",
		Long: `Create a broker's state directory: admin key pair, master key, TLS
certificate for the --listen host, token signing keys.

With --kubernetes FILE, also write the manifests of the trust services on
Kubernetes (deploy/trust-services.yaml: the broker and the attestation service
as replicated Deployments on PostgreSQL) preceded by the Secrets they read; give
--listen the broker's Service name so its certificate matches.`,
		Example: `  cocoon kbs init --state kbs --listen 127.0.0.1:8443
  cocoon kbs init --state kbs --listen cocoon-kbs.cocoon-trust.svc:8443 --kubernetes trust.yaml
  kubectl apply -f trust.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			state, _ := cmd.Flags().GetString("state")
			if state == "" {
				return errors.New("--state DIR is required")
			}
			cfg, err := kbs.Init(state, listen)
			if err != nil {
				return err
			}
			if kube != "" {
				if err := writeKubernetes(state, kube); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Kubernetes manifests and Secrets in %s (it holds the master key); apply with kubectl apply -f %s\n", kube, kube)
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), cfg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key broker state in %s (URL %s); keep %s and %s secret\n", state, cfg.URL, kbs.FileAdminKey, kbs.FileMasterKey)
			return nil
		},
	}
	initCmd.Flags().String("state", "", "state directory to create")
	initCmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "the address the broker will serve on (for its certificate and URL)")
	initCmd.Flags().StringVar(&kube, "kubernetes", "", "also write the trust services' Kubernetes manifests and Secrets to FILE (0600)")

	var (
		state, asURL, simRoots, storeSpec string
		allowSim, offline                 bool
	)
	serve := &cobra.Command{
		Use:   "serve --state DIR --listen ADDR [--allow-sim] [--as URL]",
		Short: "Serve the key broker (HTTPS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveKBS(cmd, g, kbsServeFlags{state, listen, asURL, simRoots, storeSpec, allowSim, offline})
		},
	}
	serve.Flags().StringVar(&state, "state", "", "state directory (from cocoon kbs init)")
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "address to listen on")
	serve.Flags().BoolVar(&allowSim, "allow-sim", false, "accept the simulated TEE (INSECURE: development and demos only)")
	serve.Flags().StringVar(&asURL, "as", "", "also accept tokens from this attestation service (passport mode)")
	serve.Flags().StringVar(&simRoots, "sim-roots", "", "the simulated TEE's roots (default: SIM_STATE/roots.pem)")
	serve.Flags().BoolVar(&offline, "offline", false, "no AMD KDS / Intel PCS fetches and no CRL checks")
	serve.Flags().StringVar(&storeSpec, "store", os.Getenv("COCOON_KBS_STORE"), "where resources and sessions live: bolt:PATH (default: the state directory's store, sessions in memory) or postgres://... shared by replicas (env COCOON_KBS_STORE, which keeps a password out of the process list)")

	af := &kbsAdminFlags{}
	var (
		oneShot   bool
		requestID string
	)
	put := &cobra.Command{
		Use: "put kbs:///repo/type/tag FILE", Short: "Store a resource (FILE - reads standard input)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, path, err := af.resource(args[0])
			if err != nil {
				return err
			}
			var data []byte
			if args[1] == "-" {
				data, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
			} else {
				data, err = os.ReadFile(args[1])
			}
			if err != nil {
				return err
			}
			defer clear(data)
			res, err := a.PutWith(cmd.Context(), path, data, client.PutOptions{OneShot: oneShot, RequestID: requestID})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if res.Replayed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s version %d was stored by an earlier put with this request id; nothing stored now\n", res.Resource, res.Version)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored %s version %d\n", res.Resource, res.Version)
			return nil
		},
	}
	put.Flags().BoolVar(&oneShot, "one-shot", false, "release this version once: to the first attested workload the release policy allows, on any replica; later requests are refused")
	put.Flags().StringVar(&requestID, "request-id", "", "make the put safe to run again (Idempotency-Key): when its answer was lost, the same command with the same ID stores no second version (a UUID per value; letters, digits, -._~:)")
	var version int
	get := &cobra.Command{
		Use: "get kbs:///repo/type/tag [--version N]", Short: "Print a resource (admin): the newest enabled version, or version N", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, path, err := af.resource(args[0])
			if err != nil {
				return err
			}
			b, err := a.GetVersion(cmd.Context(), path, version)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	rm := &cobra.Command{
		Use: "rm kbs:///repo/type/tag", Short: "Delete a resource", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, path, err := af.resource(args[0])
			if err != nil {
				return err
			}
			return a.Delete(cmd.Context(), path)
		},
	}
	ls := &cobra.Command{
		Use: "ls", Short: "List resources", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			list, err := a.List(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), list)
			}
			for _, p := range list {
				fmt.Fprintln(cmd.OutOrStdout(), "kbs:///"+p)
			}
			return nil
		},
	}
	pol := &cobra.Command{Use: "policy", Short: "Get or set the release policy (Rego)"}
	pget := &cobra.Command{
		Use: "get", Short: "Print the release policy", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			p, err := a.Policy(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), p)
			return nil
		},
	}
	pset := &cobra.Command{
		Use: "set FILE", Short: "Set the release policy (package policy; data.policy.allow; input = token claims; data.resource = the path)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			a, err := af.admin()
			if err != nil {
				return err
			}
			return a.SetPolicy(cmd.Context(), b)
		},
	}
	get.Flags().IntVar(&version, "version", 0, "the version to print (default: the newest enabled one)")
	versions := &cobra.Command{
		Use: "versions kbs:///repo/type/tag", Short: "List a resource's versions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, path, err := af.resource(args[0])
			if err != nil {
				return err
			}
			vs, err := a.Versions(cmd.Context(), path)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), vs)
			}
			for _, v := range vs {
				state := "enabled"
				if v.Disabled {
					state = "disabled"
				}
				if v.OneShot {
					state += ", one-shot"
				}
				if v.Released {
					state += ", released"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\n", v.N, state)
			}
			return nil
		},
	}
	toggle := func(disable bool) *cobra.Command {
		name, short := "enable", "Enable a version again"
		if disable {
			name, short = "disable", "Disable a version: it is no longer released (the newest enabled one is)"
		}
		var v int
		c := &cobra.Command{
			Use: name + " kbs:///repo/type/tag --version N", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if v < 1 {
					return errors.New("--version N is required (see cocoon kbs versions)")
				}
				a, path, err := af.resource(args[0])
				if err != nil {
					return err
				}
				return a.SetDisabled(cmd.Context(), path, v, disable)
			},
		}
		c.Flags().IntVar(&v, "version", 0, "the version")
		return c
	}
	disable, enable := toggle(true), toggle(false)
	var tail int
	auditCmd := &cobra.Command{
		Use: "audit [-n LINES]", Short: "Print the newest lines of the replicas' shared audit log (with --store postgres://)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			lines, err := a.Audit(cmd.Context(), tail)
			if err != nil {
				return err
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), string(l))
			}
			return nil
		},
	}
	auditCmd.Flags().IntVarP(&tail, "lines", "n", 100, "how many of the newest lines")
	reseal := &cobra.Command{
		Use: "reseal", Short: "Seal every stored value again under the broker's master key (a master-key rotation's third step)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			res, err := a.Reseal(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "resealed %v of %v stored values", res["resealed"], res["values"])
			if done, ok := res["policy_resealed"].(bool); ok && done {
				fmt.Fprint(cmd.OutOrStdout(), ", and the release policy's MAC")
			}
			if n, ok := res["admin_keys_resealed"].(float64); ok && n > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), ", and %v admin key MACs", n)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	for _, c := range []*cobra.Command{put, get, rm, ls, pget, pset, versions, disable, enable, reseal, auditCmd} {
		af.add(c)
	}
	pol.AddCommand(pget, pset)
	var annState, annOut string
	annotate := &cobra.Command{
		Use:   "annotate POD.yaml --state DIR [-f OUT]",
		Short: "Name a broker in a pod spec (annotations cocoon.dev/kbs and cocoon.dev/kbs-ca)",
		Long: `Write the broker's URL and CA certificate (from its state directory) into the
pod's annotations, in place or to -f OUT. Generate the policy afterwards: it pins
both, so the host cannot point the sandbox at another broker.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if annState == "" {
				return errors.New("--state DIR is required")
			}
			cfg, err := kbs.LoadConfig(annState)
			if err != nil {
				return err
			}
			ca, err := os.ReadFile(filepath.Join(annState, kbs.FileCA))
			if err != nil {
				return err
			}
			y, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			out, err := pod.SetAnnotations(y, map[string]string{
				policygen.AnnotationKBS: cfg.URL, policygen.AnnotationKBSCA: base64.StdEncoding.EncodeToString(ca),
			}, []string{policygen.AnnotationKBS, policygen.AnnotationKBSCA})
			if err != nil {
				return err
			}
			dst := args[0]
			if annOut != "" {
				dst = annOut
			}
			return os.WriteFile(dst, out, 0o644)
		},
	}
	annotate.Flags().StringVar(&annState, "state", "", "the broker's state directory")
	annotate.Flags().StringVarP(&annOut, "out", "f", "", "write here instead of in place")
	cmd.AddCommand(initCmd, serve, put, get, rm, ls, versions, disable, enable, reseal, auditCmd, newKBSRotateCmd(), pol, annotate, newKBSKeyCmd(g, &kbsAdminFlags{}), newKBSAdminKeyCmd(g), newKBSSealCmd())
	return cmd
}

func masterKey(state string) ([]byte, error) {
	if v := os.Getenv("COCOON_KBS_MASTER_KEY"); v != "" {
		k, err := hex.DecodeString(strings.TrimSpace(v))
		if err != nil || len(k) != 32 {
			return nil, errors.New("COCOON_KBS_MASTER_KEY must be 64 hex digits")
		}
		return k, nil
	}
	return os.ReadFile(filepath.Join(state, kbs.FileMasterKey))
}

type kbsServeFlags struct {
	state, listen, asURL, simRoots, store string
	allowSim, offline                     bool
}

// kbsBackend is where a broker keeps what it keeps: resources, and with a
// shared database its sessions and release policy too (nil: in-process).
type kbsBackend struct {
	store    kbs.Store
	sessions kbs.SessionStore
	policies kbs.PolicyStore
	admins   *kbs.PGAdminKeys // the shared admin keys (nil: the state directory's admin.pub)
	audit    *kbs.PGAudit     // the shared audit log (nil: the state directory's file only)
	close    func()
}

// openKBSStore opens the store spec names.
func openKBSStore(ctx context.Context, spec, state string, mk []byte, readable ...[]byte) (*kbsBackend, error) {
	switch {
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		p, err := kbs.OpenPostgres(ctx, spec)
		if err != nil {
			return nil, err
		}
		st, err := p.Store(mk, readable...)
		if err != nil {
			p.Close()
			return nil, err
		}
		pol, err := p.Policies(mk, readable...)
		if err != nil {
			p.Close()
			return nil, err
		}
		admins, err := p.AdminKeys(mk, readable...)
		if err != nil {
			p.Close()
			return nil, err
		}
		return &kbsBackend{store: st, sessions: p.Sessions(0, nil), policies: pol, admins: admins, audit: p.Audit(), close: p.Close}, nil
	case spec == "", strings.HasPrefix(spec, "bolt:"):
		path := strings.TrimPrefix(spec, "bolt:")
		if path == "" {
			path = filepath.Join(state, kbs.FileStore)
		}
		st, err := kbs.OpenBoltStore(path, mk, readable...)
		if err != nil {
			return nil, err
		}
		return &kbsBackend{store: st, close: func() { st.Close() }}, nil
	}
	return nil, errors.New("--store takes bolt:PATH or a postgres:// URL")
}

func serveKBS(cmd *cobra.Command, g *globals, f kbsServeFlags) error {
	state, listen, asURL, allowSim := f.state, f.listen, f.asURL, f.allowSim
	if state == "" {
		return errors.New("--state DIR is required (create it with cocoon kbs init)")
	}
	if _, err := kbs.LoadConfig(state); err != nil {
		return err
	}
	mk, err := masterKey(state)
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	readable, err := readableKeys(state)
	if err != nil {
		return fmt.Errorf("master key rotation: %w", err)
	}
	be, err := openKBSStore(cmd.Context(), f.store, state, mk, readable...)
	clear(mk)
	for _, k := range readable {
		clear(k)
	}
	if err != nil {
		return err
	}
	defer be.close()
	signer, err := token.NewSigner(filepath.Join(state, kbs.FileTokenKeys), jose.ES256, 5*time.Minute)
	if err != nil {
		return err
	}
	pub, err := kbs.LoadAdminPub(filepath.Join(state, kbs.FileAdminPub))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
	if be.audit != nil {
		be.audit.Logger = log
	}
	if be.admins != nil {
		// The state directory's admin key seeds an empty database (the
		// first replica to start adds it; the others find it there).
		keys, err := be.admins.AdminKeys(cmd.Context())
		if err != nil {
			return fmt.Errorf("admin keys: %w", err)
		}
		if len(keys) == 0 {
			if err := be.admins.AddAdminKey(cmd.Context(), "admin", pub); err != nil && !errors.Is(err, kbs.ErrAdminKeyExists) {
				return fmt.Errorf("admin keys: %w", err)
			}
		}
	}
	vo := attest.Options{Offline: f.offline, CacheDir: filepath.Join(state, "cache")}
	if allowSim {
		if vo.SimRoots, err = simRootsFor(g, f.simRoots); err != nil {
			return fmt.Errorf("--allow-sim: %w", err)
		}
		vo.TrustSim = true
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := as.New(ctx, as.Config{Signer: signer, Issuer: "cocoon-kbs", Verify: vo, Version: Version, Logger: log})
	if err != nil {
		return err
	}
	auditF, err := os.OpenFile(filepath.Join(state, kbs.FileAudit), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer auditF.Close()
	var audit io.Writer = auditF
	if be.audit != nil {
		// The replicas' shared log too; the file stays this replica's.
		audit = io.MultiWriter(auditF, be.audit)
	}
	cfg := kbs.Config{Store: be.store, Sessions: be.sessions, Policies: be.policies, Attestation: svc, Signer: signer, AdminKey: pub, AllowSim: allowSim, Audit: audit, Logger: log,
		OnPolicyChange: func(text string) error {
			return os.WriteFile(filepath.Join(state, kbs.FilePolicy), []byte(text), 0o600)
		}}
	if be.audit != nil {
		cfg.AuditLog = be.audit
	}
	if be.admins != nil {
		cfg.AdminKeys = be.admins
	}
	if b, err := os.ReadFile(filepath.Join(state, kbs.FilePolicy)); err == nil {
		cfg.ReleasePolicy = string(b)
	}
	if asURL != "" {
		// Fetched now (to fail early on a wrong URL) and again whenever a
		// token names a key the cache lacks (the service rotated).
		ks := &token.RemoteKeySet{URL: strings.TrimRight(asURL, "/") + "/.well-known/jwks.json"}
		if _, err := ks.KeySet(ctx, ""); err != nil {
			return err
		}
		cfg.TrustedIssuers = append(cfg.TrustedIssuers, ks)
	}
	srv, err := kbs.NewServer(ctx, cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "cocoon kbs: serving on https://%s", l.Addr())
	if allowSim {
		fmt.Fprint(cmd.ErrOrStderr(), "; --allow-sim: RELEASING SECRETS TO THE SIMULATED TEE (INSECURE, development only)")
	}
	fmt.Fprintln(cmd.ErrOrStderr())
	return serving.Serve(ctx, l, srv.Handler(), filepath.Join(state, kbs.FileTLSCert), filepath.Join(state, kbs.FileTLSKey))
}
