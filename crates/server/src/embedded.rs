//! (feature `test-support`) A whole server on a background thread with its own runtime, for tests and tools in crates
//! that do not use tokio themselves (e.g. the `keelson admin` end-to-end test).

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;

use crate::auth::{Role, create_token};
use crate::db::Db;
use crate::state::{AppState, ServerConfig};

/// A running server on 127.0.0.1 with one admin and one viewer token; stopped on drop.
pub struct EmbeddedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// An admin token.
    pub admin_token: String,
    /// A viewer token.
    pub viewer_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Open `database_url` (migrating it), keep payloads in `data_dir`, listen on a free port.
    pub fn start(database_url: &str, data_dir: &Path) -> anyhow::Result<EmbeddedServer> {
        use anyhow::Context;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building a tokio runtime")?;
        let config = ServerConfig::new(data_dir);
        let (db, admin, viewer, listener) = runtime.block_on(async {
            let db = Db::connect(database_url)
                .await
                .with_context(|| format!("opening {}", crate::db::redact_url(database_url)))?;
            let admin = create_token(&db, Role::Admin, "embedded admin").await?;
            let viewer = create_token(&db, Role::Viewer, "embedded viewer").await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding 127.0.0.1:0")?;
            anyhow::Ok((db, admin.token, viewer.token, listener))
        })?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = crate::router(AppState::new(db, config));
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let served = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "embedded server stopped");
                }
            });
        });
        Ok(EmbeddedServer {
            addr,
            admin_token: admin,
            viewer_token: viewer,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
