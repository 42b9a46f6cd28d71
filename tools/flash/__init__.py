"""`deskphone-flash`: give a board its identity, firmware and bootstrap (docs/provisioning.md)."""
