"""One router per role: auth (every principal), companies, jobs (engineers), regulators,
the operator."""
