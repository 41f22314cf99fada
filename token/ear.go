// Package token is cocoon's attestation result token: an EAR-shaped JWT
// (IETF RATS "EAT Attestation Results", as Veraison and Trustee issue them),
// signed with ES256 or ES384 keys that rotate, published as a JWKS, and
// verified by relying parties with Verify.
package token

import "cocoon.dev/cocoon/attest"

// Profile is the EAR profile cocoon's tokens follow.
const Profile = "tag:github.com,2023:veraison/ear"

// Statuses of an appraisal (EAR / AR4SI tiers).
const (
	Affirming       = "affirming"
	Warning         = "warning"
	Contraindicated = "contraindicated"
	None            = "none"
)

// TrustVector is the AR4SI trustworthiness vector. Values: 0 no claim,
// 2..31 affirming, 32..95 warning, 96..127 contraindicated.
type TrustVector struct {
	InstanceIdentity int `json:"instance-identity"`
	Configuration    int `json:"configuration"`
	Executables      int `json:"executables"`
	FileSystem       int `json:"file-system"`
	Hardware         int `json:"hardware"`
	RuntimeOpaque    int `json:"runtime-opaque"`
	StorageOpaque    int `json:"storage-opaque"`
	SourcedData      int `json:"sourced-data"`
}

// Appraisal is the appraisal of one submodule (cpu0: the TEE).
type Appraisal struct {
	Status string      `json:"ear.status"`
	Vector TrustVector `json:"ear.trustworthiness-vector"`
	// Evidence is the verified claims.
	Evidence *attest.Claims `json:"ear.veraison.annotated-evidence"`
	// Policy says why: the appraisal policy's reasons and its id.
	Policy *PolicyClaims `json:"ear.veraison.policy-claims,omitempty"`
	// PolicyID names the appraisal policy that judged the evidence.
	PolicyID string `json:"ear.appraisal-policy-id,omitempty"`
	// KeyAttestation carries the TEE's public key from the runtime data,
	// so that a key broker can encrypt to it.
	KeyAttestation *KeyAttestation `json:"ear.veraison.key-attestation,omitempty"`
}

// PolicyClaims are the appraisal policy's output.
type PolicyClaims struct {
	PolicyID string   `json:"policy_id"`
	Reasons  []string `json:"reasons"`
	// RuntimeData is the structured runtime data the evidence bound.
	RuntimeData map[string]any `json:"runtime_data,omitempty"`
	// Binding is the REPORT_DATA binding the evidence was checked under
	// (tee.Binding): a key broker's release policy can tell the agent's
	// own client (cocoon/v1/key-broker) from a KBS protocol client in the
	// workload (plain/sha384, ...).
	Binding string `json:"binding,omitempty"`
}

// KeyAttestation holds an attested public key as draft-fv-rats-ear and
// veraison's library define it: "akpub" is the base64url (unpadded) DER
// SubjectPublicKeyInfo. NewKeyAttestation makes one from a JWK and Key
// parses it back.
type KeyAttestation struct {
	PublicKey string `json:"akpub"`
}

// VerifierID names the verifier that issued a result.
type VerifierID struct {
	Developer string `json:"developer"`
	Build     string `json:"build"`
}

// EAR is the claims set of a token.
type EAR struct {
	Profile    string               `json:"eat_profile"`
	IssuedAt   int64                `json:"iat"`
	Expiry     int64                `json:"exp"`
	NotBefore  int64                `json:"nbf,omitempty"`
	Issuer     string               `json:"iss,omitempty"`
	Audience   string               `json:"aud,omitempty"`
	Nonce      string               `json:"eat_nonce,omitempty"`
	VerifierID VerifierID           `json:"ear.verifier-id"`
	Submods    map[string]Appraisal `json:"submods"`
}

// CPU returns the appraisal of the TEE submodule.
func (e *EAR) CPU() Appraisal { return e.Submods["cpu0"] }
