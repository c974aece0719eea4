"""Reaching an instance's pods through the Kubernetes API (no Pulumi)."""
