"""deskphone firmware: SIP user agent, call control, phone application."""
