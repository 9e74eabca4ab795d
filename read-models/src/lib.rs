//! Reading the read models: the SQL behind the API's gets and lists, and the rows they return.
//!
//! The projector owns the tables (their migrations and every statement that writes them); this
//! crate only selects. It exists so that readers depend on the shape of the rows, not on the
//! projector: the API links this crate and `schemas`, never the projector. A job row becomes
//! the one [`schemas::JobRecord`] that the projector's statements and the `?wait=` fold also
//! produce; devices, keys and audit entries come back as rows of their own.

pub mod audit;
pub mod batches;
pub mod devices;
pub mod jobs;
pub mod keys;
pub mod sessions;

use sqlx::PgPool;

/// A page of a list, as ShellHub's API pages: `page` from 1, `per_page` 1..=100.
#[derive(Debug, Clone)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
    pub ascending: bool,
}

impl Page {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }

    /// One page of `SELECT {columns} FROM {table}` and the total count, both under the same
    /// filters; rows ordered by `sort_column` in the page's direction, then by `id` so pages
    /// are stable. `table`, `columns` and `sort_column` are code, never input.
    pub(crate) async fn fetch<T>(
        &self,
        db: &mut sqlx::PgConnection,
        table: &str,
        columns: &str,
        sort_column: &str,
        filters: impl Fn(&mut sqlx::QueryBuilder<sqlx::Postgres>),
    ) -> sqlx::Result<(Vec<T>, i64)>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut count = sqlx::QueryBuilder::new(format!("SELECT count(*) FROM {table}"));
        filters(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(&mut *db).await?;
        let mut rows = sqlx::QueryBuilder::new(format!("SELECT {columns} FROM {table}"));
        filters(&mut rows);
        let direction = if self.ascending { "ASC" } else { "DESC" };
        rows.push(format_args!(
            " ORDER BY {sort_column} {direction} NULLS LAST, id {direction}"
        ));
        rows.push(" LIMIT ")
            .push_bind(self.per_page)
            .push(" OFFSET ")
            .push_bind(self.offset());
        Ok((rows.build_query_as().fetch_all(&mut *db).await?, total))
    }
}

/// A read-only transaction that sees one snapshot of the read models (`REPEATABLE READ`):
/// for answers assembled from several queries that must agree with each other although the
/// projector commits in between.
pub(crate) async fn snapshot(
    db: &PgPool,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    db.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
}
