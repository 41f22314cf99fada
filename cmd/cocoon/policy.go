package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/policygen"
	"cocoon.dev/cocoon/tee"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/sandbox"
)

type genFlags struct {
	debug, disableStdio   bool
	settings, seccompRoot string
	// signedBy, trustedRoot and imagePolicy trust images by signer.
	signedBy                 []string
	trustedRoot, imagePolicy string
	layerDisks               bool
	// secrets are the Secrets of a multi-document manifest (not a flag):
	// env valueFrom.secretKeyRef resolves from them.
	secrets map[string]map[string]string
}

func (f *genFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.debug, "debug", false, "allow exec of any command and reading logs (the policy says it is a debug policy)")
	cmd.Flags().BoolVar(&f.disableStdio, "disable-stdio", false, "forbid the host to read the containers' output")
	cmd.Flags().StringVar(&f.settings, "settings", "", "generator settings (JSON; see cocoon policy settings)")
	cmd.Flags().StringVar(&f.seccompRoot, "seccomp-root", pod.DefaultSeccompRoot, "directory of the nodes' Localhost seccomp profiles (kubelet's <root-dir>/seccomp); a pod's seccompProfile is pinned by digest")
	cmd.Flags().StringArrayVar(&f.signedBy, "signed-by", nil, "trust every image by this signer instead of its digest: a public key file (cosign.pub), or identity=SAN,issuer=URL for keyless signatures (with --trusted-root); repeat for several signers")
	cmd.Flags().StringVar(&f.trustedRoot, "trusted-root", "", "Sigstore trusted_root.json for keyless --signed-by (Fulcio CAs, Rekor keys, timestamp authorities)")
	cmd.Flags().BoolVar(&f.layerDisks, "layer-disks", true, "pin each layer's verified disk (a reproducible squashfs image's dm-verity root hash) so VM sandboxes can take layers from disks the node builds and shares instead of pulling them (images pinned by digest, not encrypted)")
	cmd.Flags().StringVar(&f.imagePolicy, "image-policy", "", "containers-policy.json deciding per registry/repository which images are trusted by signer (sigstoreSigned) and which by digest (insecureAcceptAnything)")
}

// trust builds the image trust of the flags (nil: every image by digest).
func (f *genFlags) trust() (*policygen.ImageTrust, error) {
	if len(f.signedBy) == 0 && f.imagePolicy == "" {
		if f.trustedRoot != "" {
			return nil, fmt.Errorf("--trusted-root is for keyless --signed-by signers; give one")
		}
		return nil, nil
	}
	t := &policygen.ImageTrust{}
	var tr []byte
	if f.trustedRoot != "" {
		var err error
		if tr, err = os.ReadFile(f.trustedRoot); err != nil {
			return nil, fmt.Errorf("--trusted-root: %w", err)
		}
	}
	for _, spec := range f.signedBy {
		var key []byte
		if !strings.Contains(spec, "=") {
			b, err := os.ReadFile(spec)
			if err != nil {
				return nil, fmt.Errorf("--signed-by %s: not identity=…,issuer=… and not a readable key file: %w", spec, err)
			}
			key = b
		}
		s, err := imagesig.ParseSigner(spec, key, tr)
		if err != nil {
			return nil, fmt.Errorf("--signed-by %s: %w", spec, err)
		}
		t.SignedBy = append(t.SignedBy, s)
	}
	if f.imagePolicy != "" {
		cp, err := policygen.LoadContainersPolicy(f.imagePolicy)
		if err != nil {
			return nil, err
		}
		t.Containers = cp
	}
	return t, nil
}

// generate makes the policy of the workload in file (annotations ignored).
func generate(cmd *cobra.Command, g *globals, file string, y []byte, f *genFlags) (*policy.Policy, []byte, error) {
	p, err := pod.ParseWith(y, pod.Options{SeccompRoot: f.seccompRoot, Secrets: f.secrets})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	p.ResolveLocal(baseDir(file))
	for _, w := range p.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	st, err := policygen.LoadSettings(f.settings)
	if err != nil {
		return nil, nil, err
	}
	trust, err := f.trust()
	if err != nil {
		return nil, nil, err
	}
	pol, err := policygen.Generate(cmd.Context(), p, policygen.GenerateOptions{
		Settings: st, Debug: f.debug, DisableStdio: f.disableStdio,
		CacheDir: filepath.Join(g.root, "cache", "policy"), Trust: trust, LayerDisks: f.layerDisks,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	text, err := policy.Render(pol)
	return pol, text, err
}

// annotate writes the policy into the workload's annotations.
func annotate(y, text []byte) ([]byte, error) {
	return pod.SetAnnotations(y, map[string]string{
		sandbox.PolicyAnnotation:     base64.StdEncoding.EncodeToString(text),
		sandbox.PolicyHashAnnotation: policy.HashHex(text, tee.Sim),
	}, []string{sandbox.PolicyAnnotation, sandbox.PolicyHashAnnotation})
}

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Generate, inspect and test security policies",
		Long: `A policy says exactly what may run in a sandbox: image digests, command lines,
environment, mounts, capabilities, what the host may exec, signal and read. It is
generated from the pod spec and its images; its hash goes into the hardware report
at launch, and the agent enforces it on every host request.`,
	}
	cmd.AddCommand(newPolicyGenerateCmd(g), newPolicySettingsCmd(g), newPolicyExplainCmd(g), newPolicyDiffCmd(g), newPolicyAllowAllCmd(g))
	return cmd
}

func newPolicyGenerateCmd(g *globals) *cobra.Command {
	f := &genFlags{}
	af := &aciFlags{}
	var print bool
	cmd := &cobra.Command{
		Use:   "generate POD.yaml|TEMPLATE.json [-o FILE | -o json] [--print]",
		Short: "Generate a pod's policy and write it into its annotations",
		Long: `Resolve each image of the pod (registry or OCI layout) to its digests and
config, verify every layer, and write the policy into the annotations
cocoon.dev/policy (base64 Rego) and cocoon.dev/policy-hash of POD.yaml, in place
(-o FILE writes elsewhere, -o json prints a summary as JSON; --print prints the
Rego instead). Images are cached by
digest: generating again is instant.

A manifest of several documents (a Deployment with its Service and ConfigMap)
gets a policy in each workload's pod template (Pod, Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job); the other documents are kept as they are. Secrets of
the manifest whose values are sealed references (cocoon kbs seal) feed env
secretKeyRef and secret volumes.

Images are pinned by digest unless trusted by who signs them: --signed-by
cosign.pub (or identity=...,issuer=... with --trusted-root) for every image, or
--image-policy containers-policy.json per registry/repository. Encrypted images
(ocicrypt) need the key broker annotation; JWE-encrypted ones also
cocoon.dev/decryption-key. See docs/images.md.

An Azure Container Instances ARM template (what az confcom acipolicygen -a
reads) is translated to a pod (unsupported fields are named; the Azure SKR
sidecar becomes cocoon's own SKR API; tags named cocoon.dev/... are the pod's
annotations) and the policy is written into its ccePolicy. Give parameters
without a defaultValue with --aci-param NAME=VALUE.`,
		Example: `  cocoon policy generate examples/hello/pod.yaml
  cocoon policy generate --print pod.yaml | less
  cocoon policy generate app.yaml     # Deployment + Service + ConfigMap: each workload annotated
  cocoon policy generate aci-template.json --aci-param image=registry/app:1
  cocoon policy generate --signed-by cosign.pub pod.yaml   # trust the signer, not the digest`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			y, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if pod.IsACITemplate(y) {
				return generateACI(cmd, g, args[0], y, f, af, print)
			}
			if docs, err := pod.Documents(y); err == nil && len(docs) > 1 {
				return generateManifest(cmd, g, args[0], docs, f, print)
			}
			pol, text, err := generate(cmd, g, args[0], y, f)
			if err != nil {
				return err
			}
			if print {
				_, err := cmd.OutOrStdout().Write(text)
				return err
			}
			annotated, err := annotate(y, text)
			if err != nil {
				return err
			}
			dst := args[0]
			if g.outFile != "" {
				dst = g.outFile
			}
			if err := os.WriteFile(dst, annotated, 0o644); err != nil {
				return err
			}
			if pol.Debug {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: this is a DEBUG policy: the host may exec any command and read every log")
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]any{"file": dst, "sha256": policy.HashHex(text, tee.Sim), "sha384": policy.HashHex(text, tee.TDX), "containers": len(pol.Containers), "images": len(pol.Images)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: policy sha256 %s (%d containers, %d images)\n", dst, policy.HashHex(text, tee.Sim), len(pol.Containers), len(pol.Images))
			return nil
		},
	}
	f.add(cmd)
	af.add(cmd)
	cmd.Flags().BoolVar(&print, "print", false, "print the policy (Rego) instead of annotating")
	return cmd
}

// generateACI makes the policy of an ACI container group template and
// writes it into its ccePolicy.
func generateACI(cmd *cobra.Command, g *globals, file string, data []byte, f *genFlags, af *aciFlags, print bool) error {
	a, _, err := translateACI(cmd, file, data, &aciFlags{params: af.params})
	if err != nil {
		return err
	}
	pol, text, err := generate(cmd, g, file, a.PodYAML, f)
	if err != nil {
		return err
	}
	if print {
		_, err := cmd.OutOrStdout().Write(text)
		return err
	}
	out, err := setCCEPolicy(data, base64.StdEncoding.EncodeToString(text))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	dst := file
	if g.outFile != "" {
		dst = g.outFile
	}
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		return err
	}
	if g.json() {
		return printJSON(cmd.OutOrStdout(), map[string]any{"file": dst, "sha256": policy.HashHex(text, tee.Sim), "sha384": policy.HashHex(text, tee.TDX), "containers": len(pol.Containers), "images": len(pol.Images)})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: policy sha256 %s written to ccePolicy (%d containers, %d images)\n", dst, policy.HashHex(text, tee.Sim), len(pol.Containers), len(pol.Images))
	return nil
}

func newPolicySettingsCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "settings",
		Short: "Print the generator's default settings (JSON)",
		Long: `Print the default generator settings. Save, edit and pass them with
--settings: env_patterns are anchored regexes for variables the platform injects
(allowed in every container), signals the host may send, exec the command lines
the host may run in every container (none by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(policygen.DefaultSettingsJSON())
			return err
		},
	}
}

func newPolicyAllowAllCmd(*globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "allow-all [--to FILE]",
		Short: "Print an allow-all policy (INSECURE: for runtime tests and development)",
		Long: `Print a policy that allows every request of the host: any image, command,
environment and mount the host asks for. It is for running conformance suites
(critest) and development, never for a workload with anything to protect:

  - the host decides what runs in the sandbox, so nothing in it is confidential
    from the host;
  - the agent fetches no secret for such a sandbox (in-pod API, encrypted
    volumes), and still never runs a privileged container;
  - its hash, the sandbox's HOST_DATA, names it: a key broker or relying party
    that pins workload policies never mistakes it for one.

The containerd runtime uses it for pods without a cocoon.dev/policy annotation
only when its default_policy option names such a file (docs/kubernetes.md).`,
		Example: `  cocoon policy allow-all --to /etc/cocoon/allow-all.rego`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			text, err := policy.Render(&policy.Policy{AllowAll: true, Containers: map[string]*policy.Container{}, Images: map[string]policy.Image{}})
			if err != nil {
				return err
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(text)
				return err
			}
			return os.WriteFile(out, text, 0o644)
		},
	}
	cmd.Flags().StringVar(&out, "to", "", "write the policy to FILE rather than stdout")
	return cmd
}

// loadPolicyFile reads a policy: Rego text, or a pod spec with the annotation.
func loadPolicyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(b, []byte("package cocoon.policy")) {
		return b, nil
	}
	p, err := pod.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s is neither a policy nor a pod spec: %w", path, err)
	}
	text, err := sandbox.PolicyText(p)
	if err != nil {
		return nil, err
	}
	if text == nil {
		return nil, fmt.Errorf("%s has no %s annotation; generate it with cocoon policy generate", path, sandbox.PolicyAnnotation)
	}
	return text, nil
}

// explainRequest is the file cocoon policy explain reads.
type explainRequest struct {
	Method  string          `json:"method"`
	Request json.RawMessage `json:"request"`
	State   struct {
		Created []string `json:"created"`
		Running []string `json:"running"`
	} `json:"state"`
	// Pulled overrides the digests the agent pulled (default: the policy's).
	Pulled map[string]policy.PulledImage `json:"pulled"`
}

func newPolicyExplainCmd(g *globals) *cobra.Command {
	var polFile, reqFile string
	cmd := &cobra.Command{
		Use:   "explain --policy FILE --request FILE",
		Short: "Evaluate a request against a policy, offline, and say why",
		Long: `Evaluate one agent API request against a policy as the agent would, without a
sandbox. The policy is a Rego file or a pod spec with the policy annotation. The
request file is JSON:

  {"method": "CreateContainer",
   "request": {"spec": {"name": "web", "image": "...", "command": ["sh"]}},
   "state": {"created": [], "running": []},
   "pulled": {"<image>": {"digest": "sha256:...", "config_digest": "sha256:..."}}}

"request" is the API message in protobuf JSON; "pulled" defaults to the policy's
digests. Exit code: 0 allowed, 2 denied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			text, err := loadPolicyFile(polFile)
			if err != nil {
				return err
			}
			ev, err := policy.NewEvaluator(cmd.Context(), text)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(reqFile)
			if err != nil {
				return err
			}
			var er explainRequest
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&er); err != nil {
				return fmt.Errorf("%s: %w", reqFile, err)
			}
			req, err := agentv1.NewRequest(er.Method)
			if err != nil {
				return fmt.Errorf("%s: %w", reqFile, err)
			}
			if len(er.Request) > 0 {
				if err := protojson.Unmarshal(er.Request, req); err != nil {
					return fmt.Errorf("%s: request: %w", reqFile, err)
				}
			}
			st := policy.State{Created: map[string]bool{}, Running: map[string]bool{}}
			for _, c := range er.State.Created {
				st.Created[c] = true
			}
			for _, c := range er.State.Running {
				st.Running[c] = true
			}
			pulled := er.Pulled
			if pulled == nil {
				pulled = map[string]policy.PulledImage{}
				for ref, img := range ev.Policy.Images {
					pulled[ref] = policy.PulledImage{Digest: img.Digest, ConfigDigest: img.ConfigDigest}
				}
			}
			in, err := policy.Input(ev.Policy, er.Method, req, &st, pulled, ev.Policy.Sandbox.Hostname)
			if err != nil {
				return err
			}
			allowed, reasons, err := ev.Decide(cmd.Context(), er.Method, in)
			if err != nil {
				return err
			}
			if g.json() {
				_ = printJSON(cmd.OutOrStdout(), map[string]any{"method": er.Method, "allowed": allowed, "reasons": reasons, "input": in})
			} else if allowed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: allowed\n", er.Method)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: denied\n", er.Method)
				for _, r := range reasons {
					fmt.Fprintf(cmd.OutOrStdout(), "  - %s\n", r)
				}
			}
			if !allowed {
				return &exitError{2, ""}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&polFile, "policy", "", "policy: Rego file, or pod spec with the policy annotation")
	cmd.Flags().StringVar(&reqFile, "request", "", "request file (JSON, see above)")
	_ = cmd.MarkFlagRequired("policy")
	_ = cmd.MarkFlagRequired("request")
	return cmd
}

func newPolicyDiffCmd(g *globals) *cobra.Command {
	f := &genFlags{}
	cmd := &cobra.Command{
		Use:   "diff POD.yaml",
		Short: "Show how a pod's annotated policy differs from a fresh one",
		Long: `Generate the pod's policy afresh (same settings flags as generate) and compare
it with the one in its annotation, field by field. Exit code: 0 same, 2 different,
1 error. Use it in CI to catch a pod spec or image changed without regenerating.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			y, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			oldText, err := loadPolicyFile(args[0])
			if err != nil {
				return err
			}
			old, err := policy.Parse(oldText)
			if err != nil {
				return fmt.Errorf("annotated policy: %w", err)
			}
			fresh, _, err := generate(cmd, g, args[0], y, f)
			if err != nil {
				return err
			}
			diffs := policy.Diff(old, fresh)
			if g.json() {
				_ = printJSON(cmd.OutOrStdout(), map[string]any{"same": len(diffs) == 0, "differences": diffs})
			} else if len(diffs) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "the annotated policy matches a freshly generated one")
			} else {
				for _, d := range diffs {
					fmt.Fprintln(cmd.OutOrStdout(), d)
				}
			}
			if len(diffs) > 0 {
				return &exitError{2, ""}
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// generateManifest annotates every workload of a multi-document manifest
// and keeps the other documents as they are.
func generateManifest(cmd *cobra.Command, g *globals, file string, docs []pod.Document, flags *genFlags, print bool) error {
	secrets, err := pod.SecretsOf(docs)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	f := *flags
	f.secrets = secrets
	var out [][]byte
	var summary []map[string]any
	for _, d := range docs {
		if !d.Workload() {
			out = append(out, d.Text)
			continue
		}
		what := d.Kind + "/" + d.Name
		pol, text, err := generate(cmd, g, file, d.Text, &f)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if print {
			fmt.Fprintf(cmd.OutOrStdout(), "# policy of %s\n%s", what, text)
			continue
		}
		annotated, err := annotate(d.Text, text)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, annotated)
		if pol.Debug {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s has a DEBUG policy: the host may exec any command and read every log\n", what)
		}
		summary = append(summary, map[string]any{"workload": what, "sha256": policy.HashHex(text, tee.Sim), "sha384": policy.HashHex(text, tee.TDX), "containers": len(pol.Containers), "images": len(pol.Images)})
	}
	if print {
		return nil
	}
	if len(summary) == 0 {
		return fmt.Errorf("%s has no workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet or Job)", file)
	}
	dst := file
	if g.outFile != "" {
		dst = g.outFile
	}
	if err := os.WriteFile(dst, pod.JoinDocuments(out), 0o644); err != nil {
		return err
	}
	if g.json() {
		return printJSON(cmd.OutOrStdout(), map[string]any{"file": dst, "workloads": summary})
	}
	for _, w := range summary {
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %s: policy sha256 %s (%d containers, %d images)\n", dst, w["workload"], w["sha256"], w["containers"], w["images"])
	}
	return nil
}
