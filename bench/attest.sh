#!/usr/bin/env bash
# Verification cost per evidence kind against the signature checks it
# cannot avoid (the same curves and keys, measured in the same run), on the
# real vectors in attest/testdata/evidence: prints each ratio. Target: each
# within 1.5x of its floor.
#   kind        verification                    floor
#   snp         BenchmarkVerifySNPCached        BenchmarkECDSAP384Verify
#   sgx         BenchmarkVerifySGXCached        BenchmarkSGXSignatureFloor
#   tdx v5      BenchmarkVerifyTDX5Cached       BenchmarkSGXSignatureFloor
#   azure snp   BenchmarkVerifyAzureSNPCached   BenchmarkAzureSNPSignatureFloor
#   azure tdx   BenchmarkVerifyAzureTDX         BenchmarkAzureTDXSignatureFloor
set -euo pipefail
cd "$(dirname "$0")/.."
n=2000x
[ -n "${BENCH_SHORT:-}" ] && n=50x
out=$(go test ./attest -run '^$' -benchtime "$n" -count 1 \
  -bench 'VerifySNPCached|ECDSAP384Verify|VerifySGXCached|SGXSignatureFloor|VerifyTDX5Cached|VerifyAzureSNPCached|AzureSNPSignatureFloor|VerifyAzureTDX|AzureTDXSignatureFloor')
echo "$out" | grep '^Benchmark'
echo "$out" | awk '
  /^Benchmark/ { name=$1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name); ns[name]=$3 }
  END {
    split("snp VerifySNPCached ECDSAP384Verify|sgx VerifySGXCached SGXSignatureFloor|tdx-v5 VerifyTDX5Cached SGXSignatureFloor|az-snp-vtpm VerifyAzureSNPCached AzureSNPSignatureFloor|az-tdx-vtpm VerifyAzureTDX AzureTDXSignatureFloor", rows, "|")
    bad = 0
    for (i = 1; i in rows; i++) {
      split(rows[i], f, " ")
      if (!(f[2] in ns) || !(f[3] in ns)) { printf "%s: missing a result\n", f[1]; bad = 1; continue }
      printf "%-12s verify %8.1f us  floor %8.1f us  ratio %.2fx\n", f[1], ns[f[2]]/1000, ns[f[3]]/1000, ns[f[2]]/ns[f[3]]
    }
    exit bad
  }'
