-- What an exec request asked for besides its argv: the names of the environment variables
-- it set (never their values), its pseudo-terminal, and how many bytes of stdin it sent
-- (never the bytes).
ALTER TABLE audit_entries
    ADD COLUMN env_keys text[],
    ADD COLUMN pty_term text,
    ADD COLUMN pty_cols integer,
    ADD COLUMN pty_rows integer,
    ADD COLUMN stdin_bytes integer;
