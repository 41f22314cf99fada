# The default release policy of cocoon's key broker. input: the attestation
# token's claims (EAR); data.resource: {repo, type, tag, path};
# data.config.allow_sim: whether the broker runs with --allow-sim.
package policy

import rego.v1

default allow := false

cpu := input.submods.cpu0

claims := cpu["ear.veraison.annotated-evidence"]

allow if count(reasons) == 0

reasons contains "the appraisal is contraindicated" if cpu["ear.status"] == "contraindicated"

reasons contains "the guest can be debugged by the host" if claims.debug

reasons contains "the evidence comes from the simulated TEE (refused unless the broker runs with --allow-sim)" if {
	claims.tee == "sim"
	not data.config.allow_sim
}
