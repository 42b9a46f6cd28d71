"""Call control (RFC 5850) on top of the SIP core's INVITE sessions; sans-IO."""
