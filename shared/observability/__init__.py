"""Logging and the ops endpoints (/healthz, /readyz, /metrics) every service exposes."""
