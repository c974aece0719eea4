"""What the core produces from a spec: BIND configuration and Kubernetes object bodies."""
