//! The web virtual terminal: operators take mail and telephone order
//! (MO/TO) payments in a browser, and capture, refund or cancel them. It
//! talks to the switch only through internal frames, with its merchant's
//! key (`switch_client`). See `docs/virtual-terminal.md`.
//!
//! Layout (one module per concept, all private):
//! - `config`: the TOML file, checked whole at start-up.
//! - `server`: the listener with its connection limit.
//! - `web`: routes, the session extractor, cookies, CSRF, headers.
//! - `session`: signed-in sessions in memory, with a limit and expiry.
//! - `role`: viewer, operator, admin, and what each may do.
//! - `store`: the operator store file (roles, hashes, TOTP, blocks), its
//!   lock, atomic writes, audit log; `cli`: `vterm operators ...`.
//! - `account`, `admin` (with `operator_pages`): one's own password and
//!   second factor; the admins' operator pages.
//! - `totp`: RFC 6238 codes; `policy`: the password policy.
//! - `password`: Argon2 verification, bounded, with lockout.
//! - `lockout`: failed sign-ins by (name, address) and by address.
//! - `forms`: what the browser sends, checked into typed requests.
//! - `pages` (with `html`): server-rendered HTML, every value escaped.
//! - `link`: the connection to the switch; `payment`: view models.
//! - `card`, `money`, `calendar`: card data (masked), amounts, UTC dates.

mod account;
mod admin;
mod calendar;
mod card;
mod cli;
mod config;
mod forms;
mod html;
mod link;
mod lockout;
mod money;
mod operator_pages;
mod pages;
mod password;
mod payment;
mod policy;
mod role;
mod server;
mod session;
mod store;
mod terminals;
mod totp;
mod web;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use cli::{operators, OperatorsCommand};
/// The workspace's one clock, read here in seconds (sessions, lockouts).
pub use clock::Clock;
pub use config::{Config, ConfigError, Operator};
pub use password::hash_password;
pub use role::Role;
pub use store::StoreError;

/// A running terminal.
#[derive(Debug)]
pub struct Running {
    /// The bound web address.
    pub addr: SocketAddr,
    /// Cancelled to shut down.
    cancel: CancellationToken,
    /// The server task.
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and returns when
    /// the server has stopped.
    ///
    /// # Errors
    /// When the server failed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task
            .await
            .context("web server task")?
            .context("web server")
    }

    /// Serves until the [`Running::cancel_token`] is cancelled, then lets
    /// requests in flight finish.
    ///
    /// # Errors
    /// When the server failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task
            .await
            .context("web server task")?
            .context("web server")
    }

    /// A token that shuts the terminal down when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Binds the listener and serves until shut down. The switch is connected
/// on first use.
///
/// # Errors
/// When the operator store cannot be opened or the listen address cannot
/// be bound.
pub async fn start(config: Config, clock: Clock) -> anyhow::Result<Running> {
    let store = store::Store::open(
        config.operators_file.clone(),
        &config.operators,
        clock.now_s(),
    )
    .context("opening the operator store (operators_file)")?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding listen_addr {}", config.listen_addr))?;
    let addr = listener.local_addr().context("listen address")?;
    let app = Arc::new(web::App {
        sessions: session::Sessions::new(
            config.sessions_max,
            config.session_idle_s,
            config.session_lifetime_s,
        ),
        passwords: password::Passwords::new(
            config.operators.first().map(|o| o.password_hash.as_str()),
        ),
        store,
        link: link::Link::new(
            config.switch_addr,
            config.client_id.clone(),
            config.secret.clone(),
        ),
        clock,
        config,
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone().cancelled_owned();
    let service = web::router(app).into_make_service_with_connect_info::<server::Peer>();
    let task = tokio::spawn(async move {
        axum::serve(server::Limited::new(listener), service)
            .with_graceful_shutdown(stop)
            .await
    });
    tracing::info!(%addr, "virtual terminal listening");
    Ok(Running { addr, cancel, task })
}
