//! API tokens: stored by the SHA-256 of their secret, never the secret itself.

use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, now_unix};

/// A token as listed: never its secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct TokenInfo {
    /// The token's ID.
    pub id: String,
    /// `admin` or `viewer`.
    pub role: String,
    /// Who or what it is for.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last use (recorded at most once a minute).
    pub last_used: Option<i64>,
}

/// A token to store: its ID, role, hash and description (the secret is not stored).
#[derive(Clone, Debug)]
pub struct NewTokenRow<'a> {
    /// The token's ID.
    pub id: &'a str,
    /// `admin` or `viewer`.
    pub role: &'a str,
    /// SHA-256 (hex) of the secret.
    pub hash: &'a str,
    /// Who or what it is for.
    pub description: &'a str,
}

/// What [`find_by_hash`] returns: the token's ID, role and last use.
pub type TokenMatch = (String, String, Option<i64>);

/// Store a token; with an `actor` (a token created over the API) the change is logged in the
/// same transaction.
pub async fn create(db: &Db, row: &NewTokenRow<'_>, actor: Option<&str>) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO tokens (id, role, hash, description, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.id)
    .bind(row.role)
    .bind(row.hash)
    .bind(row.description)
    .bind(now_unix())
    .execute(&mut *tx)
    .await
    .map_err(DbError::unique("token", row.id))?;
    match actor {
        Some(actor) => {
            activity::record_and_commit(
                tx,
                &NewActivity {
                    severity: Severity::Warning,
                    kind: "token.created",
                    actor,
                    application_id: None,
                    group_id: None,
                    version: None,
                    message: format!(
                        "{} token {} created ({})",
                        row.role, row.id, row.description
                    ),
                },
                "committing token",
            )
            .await
        }
        None => tx
            .commit()
            .await
            .map_err(DbError::query("committing token")),
    }
}

/// The token whose secret hashes to `hash`, if any.
pub async fn find_by_hash(db: &Db, hash: &str) -> Result<Option<TokenMatch>, DbError> {
    sqlx::query_as("SELECT id, role, last_used FROM tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(db.pool())
        .await
        .map_err(DbError::query("looking up a token"))
}

/// Record that token `id` was used at `now` (unix seconds).
pub async fn touch(db: &Db, id: &str, now: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE tokens SET last_used = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(db.pool())
        .await
        .map_err(DbError::query("recording token use"))?;
    Ok(())
}

/// Every token, oldest first.
pub async fn list(db: &Db) -> Result<Vec<TokenInfo>, DbError> {
    sqlx::query_as::<_, TokenInfo>(
        "SELECT id, role, description, created_at, last_used FROM tokens ORDER BY created_at, id",
    )
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing tokens"))
}

/// Revoke token `id` (it stops working at once), logged as done by `actor`.
pub async fn revoke(db: &Db, actor: &str, id: &str) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("revoking a token"))?;
    if done.rows_affected() == 0 {
        return Err(DbError::NotFound {
            what: "token",
            key: id.to_string(),
        });
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "token.revoked",
            actor,
            application_id: None,
            group_id: None,
            version: None,
            message: format!("token {id} revoked"),
        },
        "committing token revocation",
    )
    .await
}
