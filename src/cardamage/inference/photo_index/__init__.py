"""Photos reused from another claim: fingerprints of every claim photo in a real database
(SQLite or PostgreSQL), searched for copies and near-copies (see ``store`` and ``check``)."""
