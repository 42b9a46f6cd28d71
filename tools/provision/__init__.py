"""`deskphone-provision`: the fleet tool and config server (issue 7; docs/provisioning.md)."""
