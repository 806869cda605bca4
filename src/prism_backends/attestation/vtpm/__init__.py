"""SEV-SNP + vTPM evidence: a TPM2 quote by an attestation key that an SEV-SNP
report binds, as go-tpm-tools' ``attest.Attestation`` carries it."""
