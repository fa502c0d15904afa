//! Bearer tokens (placeholder: owned and replaced by ENGINEER SERVER-API).

use crate::db::Db;

/// Arguments of `keelson-server token create`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Role of the new token: admin or viewer.
    #[arg(long)]
    pub role: String,
}

/// Run `keelson-server token ...` (placeholder until SERVER-API implements it).
pub async fn token_cli(_db: &Db, _args: &TokenArgs) -> anyhow::Result<()> {
    anyhow::bail!("token management is not implemented yet")
}
