"""What a domain may create: the enabled providers, their platforms and vCPU
counts, each with its monthly cost estimate (the create form's choices)."""
