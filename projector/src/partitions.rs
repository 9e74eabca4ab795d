//! Daily range partitions of a read-model table (`<parent>_pYYYYMMDD`), shared by the audit
//! trail and the session recordings: created on demand inside the applying transaction (so a
//! rolled-back batch leaves nothing behind) and a week ahead by the retention task, and dropped
//! whole once every row they can hold is older than the retention period — `DROP TABLE`,
//! never a `DELETE`. All partition DDL runs under one advisory lock ([`lock`]).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{PgExecutor, Postgres, Transaction};

/// The daily partitions of one parent table.
#[derive(Clone, Copy, Debug)]
pub struct DailyPartitions(pub &'static str);

/// Serialises partition DDL (the batches' on-demand partitions and the retention task) for
/// the rest of the transaction: `CREATE TABLE IF NOT EXISTS` is not atomic against a
/// concurrent creation of the same table.
pub async fn lock(tx: &mut Transaction<'_, Postgres>) -> sqlx::Result<()> {
    // An arbitrary constant naming this lock ("read-model partitions").
    sqlx::query("SELECT pg_advisory_xact_lock(7305419921)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl DailyPartitions {
    pub fn name(self, day: NaiveDate) -> String {
        format!("{}_p{}", self.0, day.format("%Y%m%d"))
    }

    pub fn day_of(self, name: &str) -> Option<NaiveDate> {
        let digits = name.strip_prefix(self.0)?.strip_prefix("_p")?;
        (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| NaiveDate::parse_from_str(digits, "%Y%m%d").ok())
            .flatten()
    }

    /// Creates the partition holding `day` if it is missing; the caller holds [`lock`].
    pub async fn ensure(
        self,
        tx: &mut Transaction<'_, Postgres>,
        day: NaiveDate,
    ) -> sqlx::Result<()> {
        let next = day.succ_opt().expect("a day after");
        // Names and bounds come from a NaiveDate and a constant, never from input.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{day}') TO ('{next}')",
            self.name(day),
            self.0
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Creates (under [`lock`]) the partitions of every day in `at`: what a batch of rows
    /// about to be inserted needs.
    pub async fn ensure_for(
        self,
        tx: &mut Transaction<'_, Postgres>,
        at: &[DateTime<Utc>],
    ) -> sqlx::Result<()> {
        let days: std::collections::BTreeSet<NaiveDate> =
            at.iter().map(|t| t.date_naive()).collect();
        lock(tx).await?;
        for day in days {
            self.ensure(tx, day).await?;
        }
        Ok(())
    }

    /// The partitions that exist, oldest first.
    pub async fn list(self, db: impl PgExecutor<'_>) -> sqlx::Result<Vec<NaiveDate>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = $1",
        )
        .bind(self.0)
        .fetch_all(db)
        .await?;
        let mut days: Vec<NaiveDate> = names.iter().filter_map(|n| self.day_of(n)).collect();
        days.sort();
        Ok(days)
    }

    /// Under [`lock`] (taken here): creates the partitions of the next week and drops every
    /// partition wholly before `now - retention`. Returns the days dropped.
    pub async fn maintain(
        self,
        tx: &mut Transaction<'_, Postgres>,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> sqlx::Result<Vec<NaiveDate>> {
        lock(tx).await?;
        let today = now.date_naive();
        for ahead in 0..7 {
            self.ensure(tx, today + Duration::days(ahead)).await?;
        }
        let horizon = (now - retention).date_naive();
        let mut dropped = Vec::new();
        for day in self.list(&mut **tx).await? {
            // A partition holds [day, day+1); it is expired when all of it is before the horizon.
            if day.succ_opt().expect("a day after") <= horizon {
                let sql = format!("DROP TABLE IF EXISTS {}", self.name(day));
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut **tx)
                    .await?;
                dropped.push(day);
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let audit = DailyPartitions("audit_entries");
        let day = NaiveDate::from_ymd_opt(2026, 2, 3).unwrap();
        assert_eq!(audit.name(day), "audit_entries_p20260203");
        assert_eq!(audit.day_of("audit_entries_p20260203"), Some(day));
        assert_eq!(audit.day_of("audit_entries_p2026020"), None);
        assert_eq!(audit.day_of("audit_entries_default"), None);
        assert_eq!(
            DailyPartitions("session_frames").day_of("audit_entries_p20260203"),
            None
        );
    }
}
