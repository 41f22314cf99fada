package pod

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/volume"
)

// Azure's encrypted-filesystem sidecar (mcr.microsoft.com/aci/encfs) is a
// privileged container that mounts LUKS images from blob storage, with
// keys released from Azure Key Vault, under a directory the app
// containers share. Its configuration (EncfsSideCarArgs: base64 JSON of
// {"azure_filesystems": [...]}) becomes cocoon encrypted volumes — opened
// by the agent inside the sandbox, no privileged container — mounted at
// each filesystem's mount_point in the containers that share that
// directory. The key is kbs:///keyvault/keys/<name> (cocoon kbs key
// create, or an imported JWK) with the sidecar's own key derivation.

// encfsArgs is the sidecar's configuration, field for field.
type encfsArgs struct {
	AzureFilesystems []encfsFS `json:"azure_filesystems"`
}

type encfsFS struct {
	AzureURL        string `json:"azure_url"`
	AzureURLPrivate bool   `json:"azure_url_private"`
	MountPoint      string `json:"mount_point"`
	KeyDerivation   struct {
		Salt  string `json:"salt"`
		Label string `json:"label"`
	} `json:"key_derivation"`
	Key struct {
		KID       string          `json:"kid"`
		KTY       string          `json:"kty"`
		KeyOps    []string        `json:"key_ops"`
		Authority json.RawMessage `json:"authority"`
		AKV       json.RawMessage `json:"akv"`
	} `json:"key"`
	RawKey    string `json:"raw_key"`
	ReadWrite bool   `json:"read_write"`
}

var encfsImage = regexp.MustCompile(`^mcr\.microsoft\.com/aci/encfs(:|@|$)`)

// encfs reads the sidecar's configuration from its environment.
func (x *aciTranslator) encfs(name string, env []corev1.EnvVar) error {
	var raw string
	for _, e := range env {
		if e.Name == "EncfsSideCarArgs" {
			raw = e.Value
		}
	}
	if raw == "" {
		return fmt.Errorf("container %s is the Azure encrypted-filesystem sidecar but has no EncfsSideCarArgs", name)
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("container %s: EncfsSideCarArgs is not base64: %w", name, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var args encfsArgs
	if err := dec.Decode(&args); err != nil {
		return fmt.Errorf("container %s: EncfsSideCarArgs: %w", name, err)
	}
	if len(args.AzureFilesystems) == 0 {
		return fmt.Errorf("container %s: EncfsSideCarArgs names no azure_filesystems", name)
	}
	for i, fs := range args.AzureFilesystems {
		at := fmt.Sprintf("container %s: EncfsSideCarArgs.azure_filesystems[%d]", name, i)
		u, err := url.Parse(fs.AzureURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s.azure_url %q: want the image's http(s) URL", at, fs.AzureURL)
		}
		if fs.AzureURLPrivate {
			return fmt.Errorf("%s: azure_url_private: a private blob is read with the group's managed identity, which cocoon does not hold; make the (encrypted) image readable by its URL, e.g. a SAS URL", at)
		}
		if fs.ReadWrite {
			return fmt.Errorf("%s: read_write: cocoon reads images on URLs with range requests, read-only; set read_write false", at)
		}
		if fs.RawKey != "" {
			return fmt.Errorf("%s: raw_key is the sidecar's testing key; give the key through the key broker (key.kid)", at)
		}
		if !strings.HasPrefix(fs.MountPoint, "/") || path.Clean(fs.MountPoint) != fs.MountPoint {
			return fmt.Errorf("%s.mount_point %q: want a clean absolute path", at, fs.MountPoint)
		}
		kid, err := protocol.KeyVaultName(fs.Key.KID)
		if err != nil {
			return fmt.Errorf("%s.key: %w", at, err)
		}
		q := url.Values{"kdf": {volume.KDFAzureEncfs}}
		switch strings.TrimSuffix(fs.Key.KTY, "-HSM") {
		case "oct":
		case "RSA":
			if _, err := hex.DecodeString(fs.KeyDerivation.Salt); err != nil {
				return fmt.Errorf("%s.key_derivation.salt: not hex: %w", at, err)
			}
			q.Set("salt", fs.KeyDerivation.Salt)
			if fs.KeyDerivation.Label != "" {
				q.Set("label", fs.KeyDerivation.Label)
			}
		default:
			return fmt.Errorf("%s.key.kty %q: oct, oct-HSM, RSA or RSA-HSM", at, fs.Key.KTY)
		}
		x.encfsVolumes = append(x.encfsVolumes, encfsVolume{
			name: fmt.Sprintf("encfs-%d", len(x.encfsVolumes)), source: fs.AzureURL,
			key: "kbs:///" + protocol.KeyVaultRepo + "/" + protocol.KeyVaultType + "/" + kid + "?" + q.Encode(), mountPoint: fs.MountPoint,
		})
	}
	x.warn("container %s is the Azure encrypted-filesystem sidecar: replaced by %d cocoon encrypted volume(s), opened inside the sandbox with keys from the key broker (keyvault/keys/<name>); no privileged container runs", name, len(args.AzureFilesystems))
	return nil
}

type encfsVolume struct {
	name, source, key, mountPoint string
}

// placeEncfs adds the encrypted volumes and mounts them in every container
// that shares the directory the sidecar mounted them under.
func (x *aciTranslator) placeEncfs(k *corev1.Pod) error {
	ro := true
	for _, ev := range x.encfsVolumes {
		k.Spec.Volumes = append(k.Spec.Volumes, corev1.Volume{Name: ev.name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: EncryptedDriver, ReadOnly: &ro, VolumeAttributes: map[string]string{"source": ev.source, "key": ev.key}}}})
		used := false
		for _, cs := range [][]corev1.Container{k.Spec.InitContainers, k.Spec.Containers} {
			for i := range cs {
				for _, m := range cs[i].VolumeMounts {
					if ev.mountPoint == m.MountPath || strings.HasPrefix(ev.mountPoint, strings.TrimSuffix(m.MountPath, "/")+"/") {
						cs[i].VolumeMounts = append(cs[i].VolumeMounts, corev1.VolumeMount{Name: ev.name, MountPath: ev.mountPoint, ReadOnly: true})
						used = true
						break
					}
				}
			}
		}
		if !used {
			return fmt.Errorf("encrypted filesystem at %s: no container mounts a directory above it (the directory the sidecar shared)", ev.mountPoint)
		}
	}
	return nil
}
