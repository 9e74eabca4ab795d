-- Issue 16: SSH usernames an exec request may ask for, besides the registered `username`
-- (which is always allowed and the default).
ALTER TABLE devices ADD COLUMN allowed_usernames text[] NOT NULL DEFAULT '{}';
