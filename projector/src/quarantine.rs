//! Messages the projector set aside, so that one bad event never stops projection.
//!
//! Postgres refuses some data outright — a NUL byte in `text`, a number out of range — and no
//! retry changes its mind. Such an error is a *data error* ([`is_data_error`]): the projector
//! then applies the batch one message at a time, and a message that Postgres refuses alone is
//! recorded here ([`record`]) in the same transaction that moves the checkpoint past it. The
//! fold sets aside messages it cannot read at all (undecodable payloads, foreign subjects)
//! the same way. Every other error — Postgres down, a pool timeout, a serialization failure —
//! is *transient*: the batch is retried with backoff and nothing is skipped.
//!
//! The message itself stays in the log. A rebuild replays it and sets it aside again, so the
//! quarantine is a read model like the others; `/healthz` reports the projector `degraded`
//! while the table holds anything, and `/metrics` counts the entries.

use chrono::{DateTime, Utc};
use schemas::{Event, SubjectKind, Topology};
use sqlx::{PgExecutor, Postgres, Transaction};

/// Whether `error` is Postgres refusing the data itself, which no retry can fix.
///
/// SQLSTATE classes 22 (data exception: invalid byte sequence, value out of range, bad
/// escape in JSON), 23 (integrity constraint violation) and 54 (program limit exceeded: a row
/// or array too large), and values the driver could not encode. Everything else (connection
/// lost, pool timeout, I/O, serialization failure, deadlock, admin shutdown, insufficient
/// resources, and errors of our own SQL, which no single message causes) is transient.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(code.get(..2), Some("22" | "23" | "54"))),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// One message set aside.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Quarantined {
    pub stream_seq: i64,
    pub subject: String,
    /// The event's kind, or `output`, when the message could be decoded.
    pub kind: Option<String>,
    pub tenant: Option<String>,
    /// Why, with control characters escaped (the error may quote the offending text).
    pub error: String,
    /// When the message was stored in the log.
    pub published_at: DateTime<Utc>,
}

impl Quarantined {
    /// Describes a stored message: its kind and tenant as far as they can be read from it.
    pub fn new(
        topology: &Topology,
        seq: u64,
        subject: &str,
        payload: &[u8],
        published_at: DateTime<Utc>,
        error: &str,
    ) -> Self {
        let (kind, tenant) = match topology.classify(subject) {
            Some(SubjectKind::Event) => match Event::decode(payload) {
                Ok(event) => (
                    Some(event.kind().to_owned()),
                    Some(event.tenant.to_string()),
                ),
                Err(_) => (None, None),
            },
            Some(SubjectKind::Output { tenant, .. }) => {
                (Some("output".to_owned()), Some(tenant.to_owned()))
            }
            None => (None, None),
        };
        let escape = |s: &str| schemas::text::escape_controls(s).into_owned();
        Self {
            stream_seq: i64::try_from(seq).unwrap_or(i64::MAX),
            subject: escape(subject),
            kind,
            tenant: tenant.map(|t| escape(&t)),
            error: escape(error),
            published_at,
        }
    }
}

/// Records messages set aside; called in the transaction that moves the checkpoint past them.
pub(crate) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[Quarantined],
) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO projector_quarantine (stream_seq, subject, kind, tenant, error, published_at)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
         ON CONFLICT (stream_seq) DO NOTHING",
    )
    .bind(entries.iter().map(|e| e.stream_seq).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.subject.clone()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.kind.clone()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.tenant.clone()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.error.clone()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.published_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many messages are set aside.
pub async fn count(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM projector_quarantine")
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

/// Every message set aside, in log order.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Quarantined>> {
    sqlx::query_as(
        "SELECT stream_seq, subject, kind, tenant, error, published_at
         FROM projector_quarantine ORDER BY stream_seq",
    )
    .fetch_all(db)
    .await
}
