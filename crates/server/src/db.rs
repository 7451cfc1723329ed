//! burrowd's storage: users, tokens, workspaces, sessions, the browser's logins and app
//! credentials, and the audit log.
//!
//! SQLite for now, in `<data dir>/burrowd.db`. The SQL is kept portable (numbered `$N`
//! parameters, `ON CONFLICT ... DO NOTHING`, no SQLite-only functions) and every query lives
//! in this module, so a PostgreSQL backend means a second pool type and migration set here,
//! not changes across the server.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::secret;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "burrowd.db";

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("opening the database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A user or workspace of that name exists already.
    #[error("a {kind} named {name:?} already exists")]
    AlreadyExists {
        /// `"user"` or `"workspace"`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// No user has that name.
    #[error("no user named {0:?}")]
    UnknownUser(String),
    /// The name cannot be used (it appears in URL paths and logs).
    #[error("invalid {kind} name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    InvalidName {
        /// `"user"` or `"workspace"`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
}

/// A workspace and what its agent last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The owning user's id.
    pub owner_id: i64,
    /// The owning user's name.
    pub owner_name: String,
    /// When an agent last registered or left, Unix milliseconds.
    pub last_seen_ms: Option<i64>,
    /// Ports the agent said it will dial.
    pub allowed_ports: Vec<u16>,
}

/// A granted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub user_name: String,
    /// The workspace's id.
    pub workspace_id: i64,
    /// The workspace's name.
    pub workspace_name: String,
    /// Whether the client asked for relayed candidates only.
    pub force_relay: bool,
    /// The one workspace port an app's session may reach; `None`: any the agent allows.
    pub app_port: Option<u16>,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Session id.
    pub id: String,
    /// The user's id.
    pub user_id: i64,
    /// The workspace's id.
    pub workspace_id: i64,
    /// Relayed candidates only.
    pub force_relay: bool,
    /// SHA-256 hex of the signaling ticket.
    pub ticket_hash: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// The ticket is refused from this time on, Unix milliseconds.
    pub ticket_expires_at_ms: i64,
    /// The one workspace port the session may reach (an app's session).
    pub app_port: Option<u16>,
}

/// A live dashboard login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// Row id, which codes and app credentials minted under the login refer to.
    pub id: i64,
    /// Whose login it is.
    pub user: User,
}

/// A one-time launch code to store.
#[derive(Debug, Clone)]
pub struct NewAppCode {
    /// SHA-256 hex of the code.
    pub code_hash: String,
    /// The user who launched the app.
    pub user_id: i64,
    /// The app's workspace.
    pub workspace_id: i64,
    /// The app's port.
    pub port: u16,
    /// Where in the app to land.
    pub path: String,
    /// Whether the app is shown inside the dashboard.
    pub embedded: bool,
    /// The login the launch came from; `None` for an API token.
    pub web_session_id: Option<i64>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// The code is refused from this time on, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// What a redeemed launch code was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCode {
    /// The user who launched the app.
    pub user: User,
    /// The app's workspace: id and name.
    pub workspace_id: i64,
    /// The workspace's name.
    pub workspace_name: String,
    /// The app's port.
    pub port: u16,
    /// Where in the app to land.
    pub path: String,
    /// Whether the app is shown inside the dashboard.
    pub embedded: bool,
    /// The login the launch came from.
    pub web_session_id: Option<i64>,
}

/// An app credential to store.
#[derive(Debug, Clone)]
pub struct NewAppCredential {
    /// SHA-256 hex of the cookie's secret.
    pub secret_hash: String,
    /// The user.
    pub user_id: i64,
    /// The app's workspace.
    pub workspace_id: i64,
    /// The app's port.
    pub port: u16,
    /// The login it was minted under; it dies with it.
    pub web_session_id: Option<i64>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// The credential is refused from this time on, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// A live app credential: what one app's origin may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredential {
    /// The user.
    pub user: User,
    /// The app's workspace.
    pub workspace: Workspace,
    /// The app's port.
    pub port: u16,
}

/// One audit row to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// The user, when known.
    pub user: Option<String>,
    /// The workspace, when known.
    pub workspace: Option<String>,
    /// The workspace port of a stream.
    pub port: Option<u16>,
    /// The session, when there is one.
    pub session_id: Option<String>,
    /// The stream, for stream reports.
    pub stream_id: Option<u32>,
    /// When the stream started, Unix milliseconds.
    pub started_at_ms: Option<i64>,
    /// When the stream ended, Unix milliseconds.
    pub ended_at_ms: Option<i64>,
    /// Bytes from the client to the workspace.
    pub bytes_to_workspace: u64,
    /// Bytes from the workspace to the client.
    pub bytes_to_client: u64,
    /// `direct`, `relay` or `unknown`.
    pub path: String,
    /// What happened: `session granted`, `refused: forbidden`, a stream's outcome, ...
    pub outcome: String,
    /// The address the request came from, when it came over the network.
    pub remote_addr: Option<String>,
}

impl AuditEntry {
    /// An access decision (not a stream) at `at_ms`.
    pub fn event(at_ms: i64, outcome: impl Into<String>) -> Self {
        Self {
            at_ms,
            path: "unknown".into(),
            outcome: outcome.into(),
            ..Self::default()
        }
    }
}

/// One row of the audit log, as the API and `burrowd admin audit --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Row id; increases with time.
    pub id: i64,
    /// When it was recorded, Unix milliseconds.
    pub at_ms: i64,
    /// The user, when known.
    pub user: Option<String>,
    /// The workspace, when known.
    pub workspace: Option<String>,
    /// The workspace port of a stream.
    pub port: Option<u16>,
    /// The session.
    pub session_id: Option<String>,
    /// The stream within the session.
    pub stream_id: Option<u32>,
    /// When the stream started, Unix milliseconds.
    pub started_at_ms: Option<i64>,
    /// When the stream ended, Unix milliseconds.
    pub ended_at_ms: Option<i64>,
    /// Bytes from the client to the workspace.
    pub bytes_to_workspace: u64,
    /// Bytes from the workspace to the client.
    pub bytes_to_client: u64,
    /// `direct`, `relay` or `unknown`.
    pub path: String,
    /// What happened.
    pub outcome: String,
    /// Where the request came from.
    pub remote_addr: Option<String>,
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

/// Checks a user or workspace name: names go into URL paths, logs and terminal tables.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DbError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A port read back from an INTEGER column; burrowd only ever writes `u16`s there.
fn port_column(v: Option<i64>) -> Result<Option<u16>, sqlx::Error> {
    v.map(|p| u16::try_from(p).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

/// The condition that a row's login (`web_session_id`) is live at `$2`, or that it was
/// minted with an API token and has none.
const LOGIN_LIVE_AT_2: &str = "(web_session_id IS NULL OR web_session_id IN \
     (SELECT id FROM web_sessions WHERE expires_at_ms > $2))";

fn parse_ports(s: &str) -> Vec<u16> {
    s.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

fn workspace_from_row(row: &SqliteRow) -> Result<Workspace, sqlx::Error> {
    Ok(Workspace {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        owner_name: row.try_get("owner_name")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        allowed_ports: parse_ports(&row.try_get::<String, _>("allowed_ports")?),
    })
}

const WORKSPACE_COLUMNS: &str = "w.id, w.name, w.owner_id, u.name AS owner_name, \
     w.last_seen_ms, w.allowed_ports FROM workspaces w JOIN users u ON u.id = w.owner_id";

const AUDIT_COLUMNS: &str = "id, at_ms, user_name, workspace_name, port, session_id, stream_id, \
     started_at_ms, ended_at_ms, bytes_to_workspace, bytes_to_client, path, outcome, remote_addr";

fn audit_from_row(row: &SqliteRow) -> Result<AuditRow, sqlx::Error> {
    let port: Option<i64> = row.try_get("port")?;
    let stream_id: Option<i64> = row.try_get("stream_id")?;
    Ok(AuditRow {
        id: row.try_get("id")?,
        at_ms: row.try_get("at_ms")?,
        user: row.try_get("user_name")?,
        workspace: row.try_get("workspace_name")?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        session_id: row.try_get("session_id")?,
        stream_id: stream_id.and_then(|s| u32::try_from(s).ok()),
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        bytes_to_workspace: u64::try_from(row.try_get::<i64, _>("bytes_to_workspace")?)
            .unwrap_or(0),
        bytes_to_client: u64::try_from(row.try_get::<i64, _>("bytes_to_client")?).unwrap_or(0),
        path: row.try_get("path")?,
        outcome: row.try_get("outcome")?,
        remote_addr: row.try_get("remote_addr")?,
    })
}

impl Db {
    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, DbError> {
        create_private_dir(data_dir).map_err(|source| DbError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            // WAL lets `burrowd admin` read and write while the server runs.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open {
                path: path.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// An in-memory database, for unit tests.
    pub async fn open_in_memory() -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to `:memory:` is a database of its own.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates a user and returns its first API token (shown once; only its hash is kept).
    pub async fn add_user(&self, name: &str, now_ms: i64) -> Result<String, DbError> {
        validate_name("user", name)?;
        let token = secret::generate(secret::USER_TOKEN_PREFIX);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO users (name, created_at_ms) VALUES ($1, $2)")
            .bind(name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if unique_violation(&e) => {
                return Err(DbError::AlreadyExists {
                    kind: "user",
                    name: name.to_owned(),
                });
            }
            r => r?,
        };
        sqlx::query(
            "INSERT INTO api_tokens (user_id, token_hash, created_at_ms) \
             SELECT id, $1, $2 FROM users WHERE name = $3",
        )
        .bind(secret::hash(&token))
        .bind(now_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Creates a workspace owned by `owner` and returns its agent token (shown once).
    pub async fn add_workspace(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<String, DbError> {
        validate_name("workspace", name)?;
        let owner_id: i64 = sqlx::query("SELECT id FROM users WHERE name = $1")
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| DbError::UnknownUser(owner.to_owned()))?
            .try_get("id")?;
        let token = secret::generate(secret::AGENT_TOKEN_PREFIX);
        let inserted = sqlx::query(
            "INSERT INTO workspaces (name, owner_id, agent_token_hash, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(owner_id)
        .bind(secret::hash(&token))
        .bind(now_ms)
        .execute(&self.pool)
        .await;
        match inserted {
            Err(e) if unique_violation(&e) => Err(DbError::AlreadyExists {
                kind: "workspace",
                name: name.to_owned(),
            }),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(token),
        }
    }

    /// The user a presented API token belongs to.
    pub async fn user_by_token(&self, token: &str) -> Result<Option<User>, DbError> {
        let row = sqlx::query(
            "SELECT u.id, u.name FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1",
        )
        .bind(secret::hash(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(User {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// The workspace a presented agent token belongs to.
    pub async fn workspace_by_agent_token(
        &self,
        token: &str,
    ) -> Result<Option<Workspace>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {WORKSPACE_COLUMNS} WHERE w.agent_token_hash = $1"
        ))
        .bind(secret::hash(token))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(workspace_from_row).transpose()?)
    }

    /// The workspace of that name.
    pub async fn workspace_by_name(&self, name: &str) -> Result<Option<Workspace>, DbError> {
        let row = sqlx::query(&format!("SELECT {WORKSPACE_COLUMNS} WHERE w.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(workspace_from_row).transpose()?)
    }

    /// The workspaces `user_id` owns, by name.
    pub async fn workspaces_owned_by(&self, user_id: i64) -> Result<Vec<Workspace>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {WORKSPACE_COLUMNS} WHERE w.owner_id = $1 ORDER BY w.name"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(workspace_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Records that the workspace's agent was seen, and the ports it reported if any.
    pub async fn agent_seen(
        &self,
        workspace_id: i64,
        allowed_ports: Option<&[u16]>,
        now_ms: i64,
    ) -> Result<(), DbError> {
        match allowed_ports {
            Some(ports) => {
                let ports = ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                sqlx::query(
                    "UPDATE workspaces SET last_seen_ms = $1, allowed_ports = $2 WHERE id = $3",
                )
                .bind(now_ms)
                .bind(ports)
                .bind(workspace_id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE workspaces SET last_seen_ms = $1 WHERE id = $2")
                    .bind(now_ms)
                    .bind(workspace_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores a granted session.
    pub async fn create_session(&self, s: &NewSession) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, workspace_id, created_at_ms, force_relay, \
             ticket_hash, ticket_used, ticket_expires_at_ms, app_port) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8)",
        )
        .bind(&s.id)
        .bind(s.user_id)
        .bind(s.workspace_id)
        .bind(s.created_at_ms)
        .bind(i64::from(s.force_relay))
        .bind(&s.ticket_hash)
        .bind(s.ticket_expires_at_ms)
        .bind(s.app_port.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends the session's ticket: returns the session if `ticket` is its ticket, unused and
    /// unexpired at `now_ms`, and marks it used, in one statement so that two concurrent
    /// redemptions cannot both succeed.
    pub async fn redeem_ticket(
        &self,
        session_id: &str,
        ticket: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, DbError> {
        let done = sqlx::query(
            "UPDATE sessions SET ticket_used = 1 WHERE id = $1 AND ticket_hash = $2 \
             AND ticket_used = 0 AND ticket_expires_at_ms > $3",
        )
        .bind(session_id)
        .bind(secret::hash(ticket))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.session(session_id).await
    }

    /// The session with that id.
    pub async fn session(&self, session_id: &str) -> Result<Option<Session>, DbError> {
        let row = sqlx::query(
            "SELECT s.id, s.user_id, u.name AS user_name, s.workspace_id, \
             w.name AS workspace_name, s.force_relay, s.app_port FROM sessions s \
             JOIN users u ON u.id = s.user_id JOIN workspaces w ON w.id = s.workspace_id \
             WHERE s.id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                user_name: r.try_get("user_name")?,
                workspace_id: r.try_get("workspace_id")?,
                workspace_name: r.try_get("workspace_name")?,
                force_relay: r.try_get::<i64, _>("force_relay")? != 0,
                app_port: port_column(r.try_get("app_port")?)?,
            })
        })
        .transpose()
    }

    /// Stores a dashboard login for `user_id` under the hash of its cookie's secret.
    pub async fn create_web_session(
        &self,
        user_id: i64,
        secret_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<i64, DbError> {
        let row = sqlx::query(
            "INSERT INTO web_sessions (user_id, secret_hash, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(secret_hash)
        .bind(now_ms)
        .bind(expires_at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The live login whose cookie secret is `secret`.
    pub async fn web_session(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<WebSession>, DbError> {
        let row = sqlx::query(
            "SELECT s.id, u.id AS user_id, u.name AS user_name FROM web_sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.secret_hash = $1 AND s.expires_at_ms > $2",
        )
        .bind(secret::hash(secret))
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(WebSession {
                id: r.try_get("id")?,
                user: User {
                    id: r.try_get("user_id")?,
                    name: r.try_get("user_name")?,
                },
            })
        })
        .transpose()
    }

    /// Ends a login, with every launch code and app credential minted under it. Returns
    /// how many app credentials were revoked.
    pub async fn delete_web_session(&self, id: i64) -> Result<u64, DbError> {
        // Deleted explicitly rather than left to ON DELETE CASCADE, which SQLite applies
        // only with foreign keys on: a revocation must not depend on a connection setting.
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query("DELETE FROM app_credentials WHERE web_session_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM app_codes WHERE web_session_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM web_sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Stores a launch code.
    pub async fn create_app_code(&self, c: &NewAppCode) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO app_codes (code_hash, user_id, workspace_id, port, path, embedded, \
             web_session_id, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.code_hash)
        .bind(c.user_id)
        .bind(c.workspace_id)
        .bind(i64::from(c.port))
        .bind(&c.path)
        .bind(i64::from(c.embedded))
        .bind(c.web_session_id)
        .bind(c.created_at_ms)
        .bind(c.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends a launch code: returns what it was for if it is unused, unexpired at `now_ms`
    /// and its login (if any) is still live, and marks it used in the same statement, so
    /// that two redemptions cannot both succeed. A code is spent by any redemption, also
    /// one the caller then refuses (on another app's host, say).
    pub async fn redeem_app_code(
        &self,
        code: &str,
        now_ms: i64,
    ) -> Result<Option<AppCode>, DbError> {
        let row = sqlx::query(&format!(
            "UPDATE app_codes SET used = 1 WHERE code_hash = $1 AND used = 0 \
             AND expires_at_ms > $2 AND {LOGIN_LIVE_AT_2} \
             RETURNING user_id, workspace_id, port, path, embedded, web_session_id"
        ))
        .bind(secret::hash(code))
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let user_id: i64 = r.try_get("user_id")?;
        let workspace_id: i64 = r.try_get("workspace_id")?;
        let names = sqlx::query(
            "SELECT u.name AS user_name, w.name AS workspace_name FROM users u, workspaces w \
             WHERE u.id = $1 AND w.id = $2",
        )
        .bind(user_id)
        .bind(workspace_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(AppCode {
            user: User {
                id: user_id,
                name: names.try_get("user_name")?,
            },
            workspace_id,
            workspace_name: names.try_get("workspace_name")?,
            port: port_column(Some(r.try_get("port")?))?.unwrap_or_default(),
            path: r.try_get("path")?,
            embedded: r.try_get::<i64, _>("embedded")? != 0,
            web_session_id: r.try_get("web_session_id")?,
        }))
    }

    /// Stores an app credential.
    pub async fn create_app_credential(&self, c: &NewAppCredential) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO app_credentials (secret_hash, user_id, workspace_id, port, \
             web_session_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.secret_hash)
        .bind(c.user_id)
        .bind(c.workspace_id)
        .bind(i64::from(c.port))
        .bind(c.web_session_id)
        .bind(c.created_at_ms)
        .bind(c.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live app credential whose cookie secret is `secret`: unexpired at `now_ms`, and
    /// minted with an API token or under a login that is still live.
    pub async fn app_credential(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<AppCredential>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT c.user_id, cu.name AS user_name, c.port, {WORKSPACE_COLUMNS} \
             JOIN app_credentials c ON c.workspace_id = w.id JOIN users cu ON cu.id = c.user_id \
             WHERE c.secret_hash = $1 AND c.expires_at_ms > $2 AND {LOGIN_LIVE_AT_2}"
        ))
        .bind(secret::hash(secret))
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(AppCredential {
            user: User {
                id: r.try_get("user_id")?,
                name: r.try_get("user_name")?,
            },
            workspace: workspace_from_row(&r)?,
            port: port_column(Some(r.try_get("port")?))?.unwrap_or_default(),
        }))
    }

    /// Deletes expired logins, launch codes and app credentials.
    pub async fn prune_expired(&self, now_ms: i64) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for table in ["app_codes", "app_credentials"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE expires_at_ms <= $1 OR web_session_id IN \
                 (SELECT id FROM web_sessions WHERE expires_at_ms <= $1)"
            ))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM web_sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an audit row. Returns `false` when it is a stream report already recorded
    /// (same session and stream), which is left as it was.
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<bool, DbError> {
        let done = sqlx::query(
            "INSERT INTO audit (at_ms, user_name, workspace_name, port, session_id, stream_id, \
             started_at_ms, ended_at_ms, bytes_to_workspace, bytes_to_client, path, outcome, \
             remote_addr) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (session_id, stream_id) DO NOTHING",
        )
        .bind(e.at_ms)
        .bind(&e.user)
        .bind(&e.workspace)
        .bind(e.port.map(i64::from))
        .bind(&e.session_id)
        .bind(e.stream_id.map(i64::from))
        .bind(e.started_at_ms)
        .bind(e.ended_at_ms)
        .bind(to_i64(e.bytes_to_workspace))
        .bind(to_i64(e.bytes_to_client))
        .bind(&e.path)
        .bind(&e.outcome)
        .bind(&e.remote_addr)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest `limit` audit rows, oldest first; only `user`'s when given.
    pub async fn audit_log(
        &self,
        user: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, DbError> {
        let rows = match user {
            Some(user) => {
                sqlx::query(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE user_name = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(user)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }
}

/// Creates `dir` (and parents) readable by its owner only: it holds the database and the
/// relay secret.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> Db {
        Db::open_in_memory().await.expect("in-memory db")
    }

    #[tokio::test]
    async fn user_token_finds_its_user_and_only_its_hash_is_stored() {
        let db = db().await;
        let token = db.add_user("alice", 1).await.expect("add user");
        assert!(token.starts_with("bu_"));
        let user = db
            .user_by_token(&token)
            .await
            .expect("query")
            .expect("user");
        assert_eq!(user.name, "alice");
        assert!(db.user_by_token("bu_nope").await.expect("query").is_none());
        let stored: String = sqlx::query("SELECT token_hash FROM api_tokens")
            .fetch_one(&db.pool)
            .await
            .expect("row")
            .get("token_hash");
        assert_eq!(stored, secret::hash(&token));
        assert!(!stored.contains(&token));
    }

    #[tokio::test]
    async fn duplicate_and_invalid_names_are_refused() {
        let db = db().await;
        db.add_user("alice", 1).await.expect("add user");
        assert!(matches!(
            db.add_user("alice", 2).await,
            Err(DbError::AlreadyExists { kind: "user", .. })
        ));
        assert!(matches!(
            db.add_user("a/b", 2).await,
            Err(DbError::InvalidName { .. })
        ));
        db.add_workspace("ws", "alice", 3).await.expect("add ws");
        assert!(matches!(
            db.add_workspace("ws", "alice", 4).await,
            Err(DbError::AlreadyExists {
                kind: "workspace",
                ..
            })
        ));
        assert!(matches!(
            db.add_workspace("ws2", "bob", 4).await,
            Err(DbError::UnknownUser(_))
        ));
    }

    #[tokio::test]
    async fn ticket_redeems_once_and_not_after_expiry() {
        let db = db().await;
        db.add_user("alice", 1).await.expect("add user");
        let agent = db.add_workspace("ws", "alice", 1).await.expect("add ws");
        let ws = db
            .workspace_by_agent_token(&agent)
            .await
            .expect("query")
            .expect("ws");
        for (id, ticket) in [("s1", "t1"), ("s2", "t2")] {
            db.create_session(&NewSession {
                id: id.into(),
                user_id: ws.owner_id,
                workspace_id: ws.id,
                force_relay: false,
                ticket_hash: secret::hash(ticket),
                created_at_ms: 1000,
                ticket_expires_at_ms: 2000,
                app_port: None,
            })
            .await
            .expect("create");
        }
        assert!(
            db.redeem_ticket("s1", "t2", 1500)
                .await
                .expect("q")
                .is_none()
        );
        let s = db
            .redeem_ticket("s1", "t1", 1500)
            .await
            .expect("q")
            .expect("s1");
        assert_eq!(
            (s.user_name.as_str(), s.workspace_name.as_str()),
            ("alice", "ws")
        );
        assert!(
            db.redeem_ticket("s1", "t1", 1500)
                .await
                .expect("q")
                .is_none()
        );
        assert!(
            db.redeem_ticket("s2", "t2", 2000)
                .await
                .expect("q")
                .is_none()
        );
    }

    #[tokio::test]
    async fn stream_report_is_recorded_once_but_events_repeat() {
        let db = db().await;
        let mut e = AuditEntry::event(1, "ok");
        e.session_id = Some("s".into());
        e.stream_id = Some(3);
        assert!(db.record_audit(&e).await.expect("insert"));
        assert!(!db.record_audit(&e).await.expect("insert"));
        let ev = AuditEntry::event(2, "refused: unauthorized");
        assert!(db.record_audit(&ev).await.expect("insert"));
        assert!(db.record_audit(&ev).await.expect("insert"));
        let rows = db.audit_log(None, 10).await.expect("log");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].stream_id, Some(3));
        assert_eq!(db.audit_log(None, 1).await.expect("log")[0].id, rows[2].id);
    }

    /// alice, her workspace `ws`, and a login of hers valid until `login_expires`.
    async fn alice_logged_in(db: &Db, login_expires: i64) -> (Workspace, i64) {
        db.add_user("alice", 1).await.expect("add user");
        let agent = db.add_workspace("ws", "alice", 1).await.expect("add ws");
        let ws = db
            .workspace_by_agent_token(&agent)
            .await
            .expect("q")
            .expect("ws");
        let login = db
            .create_web_session(ws.owner_id, &secret::hash("bw_login"), 1, login_expires)
            .await
            .expect("login");
        (ws, login)
    }

    fn code(ws: &Workspace, code: &str, login: Option<i64>, expires: i64) -> NewAppCode {
        NewAppCode {
            code_hash: secret::hash(code),
            user_id: ws.owner_id,
            workspace_id: ws.id,
            port: 8080,
            path: "/deep?q=1".into(),
            embedded: true,
            web_session_id: login,
            created_at_ms: 1,
            expires_at_ms: expires,
        }
    }

    fn credential(
        ws: &Workspace,
        secret: &str,
        login: Option<i64>,
        expires: i64,
    ) -> NewAppCredential {
        NewAppCredential {
            secret_hash: secret::hash(secret),
            user_id: ws.owner_id,
            workspace_id: ws.id,
            port: 8080,
            web_session_id: login,
            created_at_ms: 1,
            expires_at_ms: expires,
        }
    }

    #[tokio::test]
    async fn a_login_is_found_by_its_secret_until_it_expires() {
        let db = db().await;
        let (_, login) = alice_logged_in(&db, 1000).await;
        let s = db
            .web_session("bw_login", 999)
            .await
            .expect("q")
            .expect("live");
        assert_eq!((s.id, s.user.name.as_str()), (login, "alice"));
        assert!(db.web_session("bw_login", 1000).await.expect("q").is_none());
        assert!(db.web_session("bw_other", 1).await.expect("q").is_none());
        let stored: String = sqlx::query("SELECT secret_hash FROM web_sessions")
            .fetch_one(&db.pool)
            .await
            .expect("row")
            .get("secret_hash");
        assert_eq!(stored, secret::hash("bw_login"));
    }

    #[tokio::test]
    async fn a_code_redeems_once_before_it_expires_and_only_while_its_login_lives() {
        let db = db().await;
        let (ws, login) = alice_logged_in(&db, 10_000).await;
        db.create_app_code(&code(&ws, "bc_a", Some(login), 100))
            .await
            .expect("code");
        db.create_app_code(&code(&ws, "bc_b", None, 100))
            .await
            .expect("code");
        db.create_app_code(&code(&ws, "bc_c", Some(login), 100))
            .await
            .expect("code");
        let a = db
            .redeem_app_code("bc_a", 50)
            .await
            .expect("q")
            .expect("first use");
        assert_eq!(
            (a.user.name.as_str(), a.workspace_name.as_str(), a.port),
            ("alice", "ws", 8080)
        );
        assert_eq!((a.path.as_str(), a.embedded), ("/deep?q=1", true));
        assert_eq!(a.web_session_id, Some(login));
        assert!(
            db.redeem_app_code("bc_a", 50).await.expect("q").is_none(),
            "reuse"
        );
        assert!(
            db.redeem_app_code("bc_b", 100).await.expect("q").is_none(),
            "expired"
        );
        assert!(
            db.redeem_app_code("bc_nope", 50)
                .await
                .expect("q")
                .is_none()
        );
        // Logging out takes the login's unspent codes with it.
        db.delete_web_session(login).await.expect("logout");
        assert!(db.redeem_app_code("bc_c", 50).await.expect("q").is_none());
    }

    #[tokio::test]
    async fn a_credential_dies_with_its_login_and_at_its_expiry() {
        let db = db().await;
        let (ws, login) = alice_logged_in(&db, 500).await;
        db.create_app_credential(&credential(&ws, "bp_login", Some(login), 10_000))
            .await
            .expect("credential");
        db.create_app_credential(&credential(&ws, "bp_token", None, 1000))
            .await
            .expect("credential");
        let c = db
            .app_credential("bp_login", 10)
            .await
            .expect("q")
            .expect("live");
        assert_eq!(
            (c.user.name.as_str(), c.workspace.name.as_str(), c.port),
            ("alice", "ws", 8080)
        );
        // The login expired: so did its credential, though its own expiry is later.
        assert!(
            db.app_credential("bp_login", 500)
                .await
                .expect("q")
                .is_none()
        );
        // One minted with an API token lives until its own expiry.
        assert!(
            db.app_credential("bp_token", 999)
                .await
                .expect("q")
                .is_some()
        );
        assert!(
            db.app_credential("bp_token", 1000)
                .await
                .expect("q")
                .is_none()
        );
    }

    #[tokio::test]
    async fn logout_revokes_the_logins_credentials_and_pruning_forgets_the_expired() {
        let db = db().await;
        let (ws, login) = alice_logged_in(&db, 500).await;
        db.create_app_credential(&credential(&ws, "bp_a", Some(login), 10_000))
            .await
            .expect("credential");
        db.create_app_credential(&credential(&ws, "bp_b", None, 10_000))
            .await
            .expect("credential");
        assert_eq!(db.delete_web_session(login).await.expect("logout"), 1);
        assert!(db.app_credential("bp_a", 10).await.expect("q").is_none());
        assert!(db.app_credential("bp_b", 10).await.expect("q").is_some());

        let late = db
            .create_web_session(ws.owner_id, &secret::hash("bw_late"), 1, 100)
            .await
            .expect("login");
        db.create_app_code(&code(&ws, "bc_x", Some(late), 10_000))
            .await
            .expect("code");
        db.prune_expired(10_000).await.expect("prune");
        for table in ["web_sessions", "app_codes", "app_credentials"] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&db.pool)
                .await
                .expect("count")
                .get("n");
            assert_eq!(n, 0, "{table}");
        }
    }

    #[tokio::test]
    async fn a_session_keeps_its_app_port() {
        let db = db().await;
        let (ws, _) = alice_logged_in(&db, 500).await;
        for (id, app_port) in [("open", None), ("app", Some(8080))] {
            db.create_session(&NewSession {
                id: id.into(),
                user_id: ws.owner_id,
                workspace_id: ws.id,
                force_relay: false,
                ticket_hash: secret::hash(id),
                created_at_ms: 1,
                ticket_expires_at_ms: 2,
                app_port,
            })
            .await
            .expect("create");
            let s = db.session(id).await.expect("q").expect("session");
            assert_eq!(s.app_port, app_port);
        }
    }

    #[tokio::test]
    async fn agent_seen_stores_ports() {
        let db = db().await;
        db.add_user("alice", 1).await.expect("add user");
        let agent = db.add_workspace("ws", "alice", 1).await.expect("add ws");
        let ws = db
            .workspace_by_agent_token(&agent)
            .await
            .expect("q")
            .expect("ws");
        db.agent_seen(ws.id, Some(&[22, 8080]), 5)
            .await
            .expect("seen");
        let ws = db.workspace_by_name("ws").await.expect("q").expect("ws");
        assert_eq!(ws.allowed_ports, vec![22, 8080]);
        assert_eq!(ws.last_seen_ms, Some(5));
    }
}
