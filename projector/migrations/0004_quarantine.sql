-- Messages the projector could not apply, set aside so that one bad event never stops
-- projection. A message lands here when it is undecodable, on a subject the projector does
-- not know, or when Postgres refuses it alone with a data error (a NUL byte in text, a value
-- out of range); the checkpoint moves past it in the same transaction. Rebuilt like every read
-- model: a replay sets aside the same messages.
CREATE TABLE projector_quarantine (
    stream_seq      bigint PRIMARY KEY,
    subject         text NOT NULL,
    -- The event's kind (`exec_rejected`, …) or `output`, when the message could be decoded.
    kind            text,
    tenant          text,
    -- Why it was set aside, with control characters escaped.
    error           text NOT NULL,
    -- When the message was stored in the log (the same on every replay).
    published_at    timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
