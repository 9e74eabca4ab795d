-- Jobs whose template is sensitive (`bbb-conf --secret`, tenant templates with
-- "sensitive": true): their output is shown only to owners and administrators. Set from the
-- exec request's `Sshq-Sensitive` header (and from output on `<p>.sec.…`), on the job and on
-- its audit entry, so both REST views can redact it for other roles.
ALTER TABLE jobs ADD COLUMN sensitive boolean NOT NULL DEFAULT false;
ALTER TABLE audit_entries ADD COLUMN sensitive boolean NOT NULL DEFAULT false;
