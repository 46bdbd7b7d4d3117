"""The posterior layer: importance weights (more to come)."""
