"""Findings: what to change in the fleet, and what each change would save (issue 17)."""
