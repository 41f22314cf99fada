package kbs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// State files of a broker (cocoon kbs init).
const (
	FileAdminKey  = "admin.key"  // Ed25519 private key, 0600
	FileAdminPub  = "admin.pub"  // its public key
	FileMasterKey = "master.key" // 32 bytes, 0600 (or $COCOON_KBS_MASTER_KEY, hex)
	FileTLSKey    = "tls.key"    // 0600
	FileTLSCert   = "tls.crt"
	FileCA        = "ca.pem" // what clients trust (the self-signed certificate)
	FileConfig    = "kbs.json"
	FileStore     = "resources.db"
	FileAudit     = "audit.log"
	FileTokenKeys = "token-keys.json"
	FilePolicy    = "release-policy.rego"
)

// StateConfig is kbs.json.
type StateConfig struct {
	URL string `json:"url"`
}

// Init creates a broker's state in dir: admin key, master key, a TLS
// certificate for the listen address, and the config with the broker's URL.
// It refuses to overwrite an existing state.
func Init(dir, listen string) (*StateConfig, error) {
	if _, err := os.Stat(filepath.Join(dir, FileAdminKey)); err == nil {
		return nil, fmt.Errorf("%s already holds a key broker state; use another directory", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	master := make([]byte, 32)
	if _, err := rand.Read(master); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", listen, err)
	}
	certPEM, keyPEM, err := selfSigned(host)
	if err != nil {
		return nil, err
	}
	cfg := &StateConfig{URL: "https://" + net.JoinHostPort(host, port)}
	cj, _ := json.MarshalIndent(cfg, "", "  ")
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FileAdminKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600},
		{FileAdminPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644},
		{FileMasterKey, master, 0o600},
		{FileTLSKey, keyPEM, 0o600},
		{FileTLSCert, certPEM, 0o644},
		{FileCA, certPEM, 0o644},
		{FileConfig, cj, 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	clear(master)
	clear(pk)
	return cfg, nil
}

func selfSigned(host string) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	t := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "cocoon key broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(5, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
		t.IPAddresses = append(t.IPAddresses, ip)
	} else if host != "" && ip == nil && host != "localhost" {
		t.DNSNames = append(t.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), nil
}

// LoadAdminKey reads the admin private key.
func LoadAdminKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("admin key: not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("admin key: not Ed25519")
	}
	return ek, nil
}

// LoadAdminPub reads the admin public key.
func LoadAdminPub(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("admin public key: not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("admin public key: not Ed25519")
	}
	return pk, nil
}

// LoadConfig reads kbs.json.
func LoadConfig(dir string) (*StateConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileConfig))
	if err != nil {
		return nil, fmt.Errorf("%s is not a key broker state (cocoon kbs init --state %s): %w", dir, dir, err)
	}
	var c StateConfig
	return &c, json.Unmarshal(b, &c)
}

// GenerateAdminKey writes a new Ed25519 admin key pair: the private key to
// keyPath (0600, as admin.key) and its public key to keyPath+".pub", which
// an existing admin adds with cocoon kbs admin-key add.
func GenerateAdminKey(keyPath string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	clear(priv)
	if err != nil {
		return err
	}
	defer clear(pk)
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("admin key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: pk}); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(keyPath+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}
