"""The audit trail (docs/security.md, "Audit trail"): records, their hash chain, where they are
kept, how calls write them, the auditors' API, the FHIR export and the verify command
(``python -m services.common.audit``)."""
