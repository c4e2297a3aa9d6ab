"""Parse stage: raw lines or documents -> AuditEvent. Knows nothing about rules."""
