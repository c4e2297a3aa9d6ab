"""Shipped Falco-format rules; data only. Installed as the package ``detector.shipped_rules``."""
