"""Studies: many runs and their reports (compare, sweep, tune); see docs/studies.md."""
