"""Reports: tables for people, JSON for machines, manifests and plots."""
