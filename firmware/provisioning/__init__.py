"""Configuration model and validation (pure) and the provisioning client."""
