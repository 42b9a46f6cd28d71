"""Sans-IO SIP core: parser, URIs, transactions, dialogs, digest auth, registration."""
