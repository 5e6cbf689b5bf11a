"""Inputs of attribution: process cgroups → pod UID, this node's pods from the Kubernetes
API, and the rules that name a service."""
