# cocoon's default appraisal policy: verified claims + reference values ->
# an EAR status, an AR4SI trustworthiness vector and the reasons.
# input.claims: attest.Claims; input.reference_values: the reference values.
package cocoon.appraisal

import rego.v1

c := input.claims

rv := object.get(input, "reference_values", {})

list(k) := object.get(rv, k, []) if object.get(rv, k, []) != null

list(k) := [] if object.get(rv, k, []) == null

# --- hardware ----------------------------------------------------------------

hardware_reasons contains sprintf("tee: found %s, expected one of %v", [c.tee, list("tees")]) if {
	count(list("tees")) > 0
	not c.tee in list("tees")
}

hardware_reasons contains sprintf("reported_tcb.%s: found %d, expected at least %d", [k, c.snp.reported_tcb[k], min]) if {
	some k, min in object.get(rv, "min_tcb", {})
	c.snp.reported_tcb[k] < min
}

hardware_reasons contains sprintf("tdx tcb_status: %s", [c.tdx.tcb_status]) if {
	c.tdx.tcb_status == "Revoked"
}

hardware_reasons contains sprintf("sgx tcb_status: %s", [c.sgx.tcb_status]) if {
	c.sgx.tcb_status == "Revoked"
}

default hardware := 2

hardware := 96 if count(hardware_reasons) > 0

hardware := 32 if {
	count(hardware_reasons) == 0
	c.tee == "sim"
}

hardware := 32 if {
	count(hardware_reasons) == 0
	c.tdx
	not c.tdx.tcb_status in {"UpToDate"}
}

hardware := 32 if {
	count(hardware_reasons) == 0
	c.sgx
	not c.sgx.tcb_status in {"UpToDate", "Revoked"}
}

hardware_warning contains sprintf("sgx tcb_status: %s (the platform's TCB level was not judged against Intel's collateral)", [c.sgx.tcb_status]) if {
	c.sgx
	not c.sgx.tcb_status in {"UpToDate", "Revoked"}
}

hardware_warning contains "tee: sim (the simulated TEE proves nothing against the host; development only)" if c.tee == "sim"

hardware_warning contains sprintf("tdx tcb_status: %s", [c.tdx.tcb_status]) if {
	c.tdx
	not c.tdx.tcb_status in {"UpToDate", "Revoked"}
}

# --- executables (the launch measurement, vTPM PCRs, the enclave) --------

pcr_ref := object.get(rv, "pcrs", {}) if object.get(rv, "pcrs", {}) != null

pcr_ref := {} if object.get(rv, "pcrs", {}) == null

sgx_ref := object.get(rv, "sgx", {}) if object.get(rv, "sgx", {}) != null

sgx_ref := {} if object.get(rv, "sgx", {}) == null

sgx_list(k) := object.get(sgx_ref, k, []) if object.get(sgx_ref, k, []) != null

sgx_list(k) := [] if object.get(sgx_ref, k, []) == null

executables_mismatch contains sprintf("measurement: found %s, expected one of %v", [c.measurement, list("measurements")]) if {
	count(list("measurements")) > 0
	not c.measurement in list("measurements")
}

executables_mismatch contains sprintf("pcrs: the reference values pin vTPM PCRs, but %s evidence has none", [c.tee]) if {
	count(pcr_ref) > 0
	not c.azure
}

executables_mismatch contains sprintf("pcrs[%s]: found %s, expected one of %v", [i, object.get(c.azure.pcrs, i, "nothing (not quoted)"), vals]) if {
	some i, vals in pcr_ref
	c.azure
	not object.get(c.azure.pcrs, i, "") in vals
}

executables_mismatch contains sprintf("sgx: the reference values are an SGX enclave's, but the evidence is %s", [c.tee]) if {
	count(sgx_ref) > 0
	not c.sgx
}

executables_mismatch contains sprintf("sgx.%s: found %s, expected one of %v", [k, c.sgx[k], sgx_list(k)]) if {
	some k in ["mrenclave", "mrsigner"]
	count(sgx_list(k)) > 0
	not c.sgx[k] in sgx_list(k)
}

executables_mismatch contains sprintf("sgx.isv_prod_id: found %d, expected %d", [c.sgx.isv_prod_id, sgx_ref.isv_prod_id]) if {
	c.sgx.isv_prod_id != sgx_ref.isv_prod_id
}

executables_mismatch contains sprintf("sgx.isv_svn: found %d, expected at least %d", [c.sgx.isv_svn, sgx_ref.min_isv_svn]) if {
	c.sgx.isv_svn < sgx_ref.min_isv_svn
}

# Something was compared with reference values (and nothing differed).
executables_pinned if c.measurement in list("measurements")

executables_pinned if count(pcr_ref) > 0

executables_pinned if count(sgx_ref) > 0

default executables := 33

executables := 96 if count(executables_mismatch) > 0

executables := 2 if {
	count(executables_mismatch) == 0
	executables_pinned
}

executables_reasons contains r if some r in executables_mismatch

executables_reasons contains "measurement: no reference values to compare with" if {
	count(executables_mismatch) == 0
	not executables_pinned
}

# --- configuration (the policy hash and debug) -------------------------------

# AR4SI defines 2, 3, 32 and 96 for configuration; with no reference
# values there is no claim (0), and the status says "warning" below.
default configuration := 0

configuration := 2 if {
	c.host_data in list("host_data")
	not debug_refused
}

configuration := 96 if {
	count(list("host_data")) > 0
	not c.host_data in list("host_data")
}

configuration := 96 if debug_refused

debug_refused if {
	c.debug
	not object.get(rv, "allow_debug", false)
}

configuration_reasons contains sprintf("host_data: found %s, expected one of %v", [c.host_data, list("host_data")]) if {
	count(list("host_data")) > 0
	not c.host_data in list("host_data")
}

configuration_reasons contains "debug: found true (the guest can be debugged by the host), expected false" if debug_refused

configuration_reasons contains "host_data: no reference values to compare with" if {
	count(list("host_data")) == 0
	not debug_refused
}

# --- result ------------------------------------------------------------------

vector := {
	"instance-identity": 2,
	"configuration": configuration,
	"executables": executables,
	"file-system": 0,
	"hardware": hardware,
	"runtime-opaque": 0,
	"storage-opaque": 0,
	"sourced-data": 0,
}

worst := max([v | some v in vector])

default status := "affirming"

status := "contraindicated" if worst >= 96

status := "warning" if {
	worst >= 32
	worst < 96
}

status := "warning" if {
	worst < 32
	unjudged
}

# Nothing to compare the launch with: no claim in the vector, but never
# "affirming".
unjudged if configuration == 0

unjudged if executables == 33

reasons := sort(array.concat(
	array.concat([r | some r in hardware_reasons], [r | some r in hardware_warning]),
	array.concat([r | some r in configuration_reasons], [r | some r in executables_reasons]),
))

result := {"status": status, "vector": vector, "reasons": reasons}
