//! The embedded backend's SQLite database: opening it with the settings that make a
//! commit survive the process being killed, the versioned schema, and running
//! statements off the async threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// The database file's name in the data directory.
pub const DATABASE_FILE: &str = "offpath.sqlite3";

/// How long a statement waits for another connection's (another process's) write
/// lock before it fails as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[n]` takes a database from version
/// `n` to `n + 1` (`PRAGMA user_version`). Never edit a released migration; add one.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        -- Job::due_at: when the sweep may need to look at the job; NULL when never.
        due_at INTEGER,
        -- 1 while queued or running.
        unfinished INTEGER NOT NULL,
        -- TTL, epoch seconds.
        expires_at INTEGER NOT NULL,
        -- The Job, as JSON.
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX jobs_by_owner ON jobs (owner, created_at, id);
    CREATE INDEX jobs_due ON jobs (due_at, id) WHERE due_at IS NOT NULL;
    CREATE INDEX jobs_unfinished ON jobs (owner) WHERE unfinished = 1;
    CREATE INDEX jobs_expiry ON jobs (expires_at);

    CREATE TABLE activity (
        minute INTEGER PRIMARY KEY,
        -- The minute's Activity, as JSON.
        record TEXT NOT NULL
    );

    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        -- The message group ('' for none).
        grp TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        receive_count INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        -- The receipt handle of the last receive; NULL before the first.
        receipt TEXT
    );
    CREATE INDEX messages_in_order ON messages (queue, seq);
    CREATE INDEX messages_by_group ON messages (queue, grp, seq);
    CREATE INDEX messages_by_visibility ON messages (queue, grp, visible_at);
    CREATE UNIQUE INDEX messages_by_receipt ON messages (receipt) WHERE receipt IS NOT NULL;

    -- The groups a fair queue serves, and when each was last served (a counter).
    CREATE TABLE message_groups (
        queue TEXT NOT NULL,
        grp TEXT NOT NULL,
        served INTEGER NOT NULL,
        PRIMARY KEY (queue, grp)
    ) WITHOUT ROWID;
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// What a commit survives ([`Durability::Process`] by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: a commit is in the write-ahead log before it
    /// returns, so it survives the process being killed (`kill -9`, a crash, the OOM
    /// killer). A power cut or an OS crash may lose the transactions committed since
    /// the last checkpoint; the database stays consistent.
    #[default]
    Process,
    /// WAL with `synchronous = FULL`: every commit is synced to disk before it
    /// returns, so it also survives a power cut, at the cost of one `fsync` per write.
    Power,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        }
    }
}

/// Why the database could not be opened, named with its file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    /// SQLite refused the file: unreadable, locked, not a database, corrupt.
    #[error("cannot open the database {0}: {1}")]
    Sqlite(PathBuf, rusqlite::Error),
    /// The blob directory beside it could not be created.
    #[error("{0}")]
    Blobs(offpath_core::BlobError),
    /// The file was written by a newer offpath.
    #[error(
        "the database {path} has schema version {found}, newer than this offpath's {SCHEMA_VERSION}: run a newer offpath, or move the data directory away"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
    },
}

/// A statement's failure, sorted the way the ports' errors are.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The disk (or the database's page limit) is full, or another process held the
    /// write lock too long: the same write may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => DbError::Unavailable(format!(
                "the embedded database is full (no space left on its disk, or its page limit): {err}"
            )),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                DbError::Unavailable(format!("the embedded database is busy: {err}"))
            }
            _ => DbError::Other(format!("embedded database: {err}")),
        }
    }
}

impl From<serde_json::Error> for DbError {
    fn from(err: serde_json::Error) -> Self {
        DbError::Other(format!("embedded database record: {err}"))
    }
}

impl From<DbError> for offpath_core::StoreError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(message) => offpath_core::StoreError::Unavailable(message),
            DbError::Other(message) => offpath_core::StoreError::Other(message),
        }
    }
}

impl From<DbError> for offpath_core::QueueError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(message) => offpath_core::QueueError::Unavailable(message),
            DbError::Other(message) => offpath_core::QueueError::Other(message),
        }
    }
}

/// One connection to the database file, shared by the store and the queues of a
/// process; other processes open their own.
#[derive(Clone)]
pub struct Database {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Database {
    /// Opens (creating when missing) the database in `data_dir`, migrates it to this
    /// build's schema, and checks it can be read.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|err| OpenError::Directory(data_dir.to_owned(), err))?;
        let path = data_dir.join(DATABASE_FILE);
        let fail = |err| OpenError::Sqlite(path.clone(), err);
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        // auto_vacuum takes effect only on a new database (before its first table).
        connection
            .execute_batch(&format!(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = {};
                 PRAGMA foreign_keys = ON;",
                durability.pragma()
            ))
            .map_err(fail)?;
        let mut database = Database {
            connection: Arc::new(Mutex::new(connection)),
            path,
        };
        database.migrate()?;
        Ok(database)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the schema to [`SCHEMA_VERSION`], one migration a transaction.
    fn migrate(&mut self) -> Result<(), OpenError> {
        let path = self.path.clone();
        let fail = |err| OpenError::Sqlite(path.clone(), err);
        let mut connection = self.connection.lock().expect("database lock");
        let found: u32 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(fail)?;
        if found > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                path: path.clone(),
                found,
            });
        }
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let transaction = connection
                .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
                .map_err(fail)?;
            // Another process may have migrated while this one waited for the lock.
            let now: u32 = transaction
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(fail)?;
            if now > version as u32 {
                continue;
            }
            transaction.execute_batch(migration).map_err(fail)?;
            transaction
                .pragma_update(None, "user_version", version as u32 + 1)
                .map_err(fail)?;
            transaction.commit().map_err(fail)?;
            tracing::info!(path = %path.display(), version = version + 1, "database migrated");
        }
        // Reads every table's root page: a file that is not a database or whose
        // schema is damaged fails here, at start-up, naming the file.
        connection
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(fail)?;
        Ok(())
    }

    /// Runs `work` on the connection on a blocking thread (a commit may wait for the
    /// disk or for another process's lock).
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().expect("database lock");
            work(&mut connection)
        })
        .await
        .map_err(|err| DbError::Other(format!("database thread: {err}")))?
    }

    /// The bytes the database's pages take (the file's size once the write-ahead log
    /// is checkpointed).
    pub async fn size(&self) -> Result<u64, DbError> {
        self.run(|connection| {
            let pages: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0))?;
            let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            Ok((pages * page_size) as u64)
        })
        .await
    }

    /// Sets the most pages the file may grow to (a test's small disk).
    pub fn limit_pages(&self, pages: u64) -> Result<(), DbError> {
        let connection = self.connection.lock().expect("database lock");
        connection.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_opens_again_at_its_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path(), Durability::Process).unwrap());
        let database = Database::open(dir.path(), Durability::Power).unwrap();
        let connection = database.connection.lock().unwrap();
        let version: u32 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let journal: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn a_newer_schema_stops_start_up_naming_the_file_and_the_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path(), Durability::Process).unwrap());
        let path = dir.path().join(DATABASE_FILE);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let refusal = Database::open(dir.path(), Durability::Process)
            .err()
            .unwrap()
            .to_string();
        assert!(refusal.contains(&path.display().to_string()), "{refusal}");
        assert!(
            refusal.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
            "{refusal}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_stops_start_up_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let refusal = Database::open(dir.path(), Durability::Process)
            .err()
            .unwrap()
            .to_string();
        assert!(refusal.contains(&path.display().to_string()), "{refusal}");
        assert!(refusal.contains("not a database"), "{refusal}");
    }
}
