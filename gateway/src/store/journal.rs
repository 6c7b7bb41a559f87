//! The one owner of the journal file: where it is, the data folder's lock, the pragmas,
//! every migration (through [`super::schema`]), and every connection to it.
//!
//! # What it hands out
//!
//! - [`Journal::open`]: the writer thread (the only connection that writes events, dead
//!   letters, acks, the read model), behind a [`WriterGuard`] that stops and joins it on
//!   close or drop, so that the last group is committed and the WAL checkpointed before
//!   the data folder's lock is released. [`start`] is the whole start-up prelude for a
//!   config (route specs, open, guard), for the gateway and for the CLI alike.
//! - [`Journal::read_only`]: connections that cannot write, for the CLI and the API.
//! - [`Journal::commands_connection`]: the downlink's connection, the one deliberate second
//!   writer (the `store` module essay, "The commands connection", says why it is safe).
//!
//! # Invariants
//!
//! - [`FILE_NAME`] is the only place the file is named; the damaged marker
//!   (`{file}.damaged`) and the lock (`{stem}.lock`) are derived from it.
//! - The writer runs only while this process holds the data folder's lock (an advisory
//!   `flock`, dropped by the kernel when the process dies, so `kill -9` never leaves it
//!   stale): two gateways on one journal would each forward every event.
//! - A marker left by a run that found the file damaged is checked before anything opens it.
//! - A journal the gateway creates is readable by its owner only (0600, and so are its
//!   `-wal` and `-shm`); one that others can read is warned about at every open and by
//!   `check-config` ([`Journal::exposure_warnings`]).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::handle::{CloseOnDrop, Queued, Queues, StoreHandle, INGEST_QUEUE_EVENTS};
use super::metrics::StoreMeters;
use super::{schema, writer, DeviceAck, Opened, RouteSpec, StoreError};
use crate::config::{Config, StoreConfig, Synchronous};

/// The journal file's name inside `[gateway].data_dir`.
pub const FILE_NAME: &str = "journal.db";

/// How long a reader or the commands connection waits for the writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal of one data folder. Cheap to clone; opens nothing by itself.
#[derive(Debug, Clone)]
pub struct Journal {
    data_dir: PathBuf,
    path: PathBuf,
}

impl Journal {
    /// The journal under `data_dir`.
    pub fn new(data_dir: &Path) -> Journal {
        Journal { data_dir: data_dir.to_owned(), path: data_dir.join(FILE_NAME) }
    }

    /// The journal of `config` (`[gateway].data_dir`).
    pub fn of(config: &Config) -> Journal {
        Journal::new(&config.gateway.data_dir)
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The marker a run leaves beside a journal it found damaged.
    pub fn damaged_marker(&self) -> PathBuf {
        damaged_marker(&self.path)
    }

    /// The data folder's lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// Opens (or creates) the journal, takes the data folder's lock and starts the writer
    /// thread. `acks` receives, after every commit, the new high-water mark of each device
    /// in it.
    pub fn open(
        &self,
        config: &StoreConfig,
        routes: &[RouteSpec],
        metrics: impl Into<StoreMeters>,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    ) -> Result<Store, StoreError> {
        self.open_with(config, routes, metrics.into(), acks, true)
    }

    /// [`Journal::open`], with the read model on or off (off only to measure what it costs).
    pub(crate) fn open_with(
        &self,
        config: &StoreConfig,
        routes: &[RouteSpec],
        metrics: StoreMeters,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
        read_model: bool,
    ) -> Result<Store, StoreError> {
        self.open_inner(config, routes, metrics, acks, read_model, None)
    }

    /// [`Journal::open`] on a "disk" with room for only `room_pages` more pages: the
    /// writer's file may not grow beyond that (`PRAGMA max_page_count`), and a commit that
    /// needs more fails with `SQLITE_FULL`, as on a full file system.
    #[cfg(test)]
    pub(super) fn open_with_room(
        &self,
        config: &StoreConfig,
        routes: &[RouteSpec],
        metrics: StoreMeters,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
        room_pages: u64,
    ) -> Result<Store, StoreError> {
        self.open_inner(config, routes, metrics, acks, true, Some(room_pages))
    }

    fn open_inner(
        &self,
        config: &StoreConfig,
        routes: &[RouteSpec],
        metrics: StoreMeters,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
        read_model: bool,
        room_pages: Option<u64>,
    ) -> Result<Store, StoreError> {
        let data_dir = &self.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
        let lock = self.lock()?;
        let marker = self.damaged_marker();
        if let Ok(reason) = std::fs::read_to_string(&marker) {
            return Err(StoreError::Damaged { path: self.path.clone(), marker, reason: reason.trim().to_owned() });
        }
        let route_names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        let route_max_age = routes.iter().map(|r| r.max_age).collect();
        let conn = self.connect_writer(config)?;
        if let Some(room) = room_pages {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            conn.pragma_update(None, "max_page_count", pages + room as i64)?;
        }
        let mut state = schema::read_state(&conn, &self.path, &route_names)?;
        let committed = Arc::new(Queues::new(route_names.len() + super::SPARE_ROUTE_SLOTS));
        let names = Arc::new(std::sync::RwLock::new(route_names));
        let opened = Opened {
            depth: state.routes.iter().map(|r| r.depth).collect(),
            last_batch: state.routes.iter().map(|r| r.last_batch).collect(),
            filter_state: std::mem::take(&mut state.filter_state),
            gateway_boot: state.gateway_boot,
        };
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(Queued::new(INGEST_QUEUE_EVENTS, config.commit_max_events));
        let parts =
            writer::Parts { journal: self.clone(), config: config.clone(), route_max_age, state, names: names.clone() };
        let mut writer = writer::Writer::new(conn, parts, metrics, committed.clone(), acks);
        writer.read_model = read_model;
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let _close = CloseOnDrop(taken.clone());
                let _ = taken.writer.set(std::thread::current());
                writer.run(rx, &taken);
                // The lock is released when the writer has committed its last group and closed.
                drop(lock);
            })
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
        let handle = StoreHandle { tx, committed, queued, routes: names };
        Ok(Store { writer: WriterGuard { handle: handle.clone(), thread: Some(thread) }, handle, opened })
    }

    /// Warnings about the journal's files ([`FILE_NAME`] and its `-wal` and `-shm`) that
    /// users other than the owner can read: they hold every buffered event and the raw
    /// payloads of dead letters (SECURITY.md). Empty when none exists yet.
    pub fn exposure_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for path in self.files() {
            if let Some(mode) = crate::config::secret::readable_by_others(&path, false) {
                warnings.push(format!(
                    "{} is readable by other users (mode {mode:03o}); it holds buffered events and raw device \
                     payloads: chmod 600 it (the gateway creates it 600)",
                    path.display()
                ));
            }
        }
        warnings
    }

    /// The SQLite file and its WAL and shared-memory files.
    fn files(&self) -> [PathBuf; 3] {
        let with_suffix = |suffix: &str| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        [self.path.clone(), with_suffix("-wal"), with_suffix("-shm")]
    }

    /// Creates the journal file readable and writable by its owner only, unless it exists:
    /// SQLite would create it 0644 less the umask, and gives the `-wal` and `-shm` files it
    /// makes the main file's mode, so they are 0600 too.
    fn create_private(&self) -> Result<(), StoreError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&self.path) {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(StoreError::DataDir { path: self.path.clone(), source }),
        }
    }

    /// The writer's connection: the pragmas, then the schema and every migration.
    ///
    /// Pages of a new journal are [`PAGE_SIZE`] bytes.
    fn connect_writer(&self, config: &StoreConfig) -> Result<Connection, StoreError> {
        for warning in self.exposure_warnings() {
            tracing::warn!("{warning}");
        }
        self.create_private()?;
        let path = &self.path;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| schema::classify(path, e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| schema::classify(path, e))?;
        schema::check_version(&conn, path)?;
        // auto_vacuum must be chosen before the first table exists; it lets retention give
        // pages back to the file system (`incremental_vacuum`) instead of only reusing them.
        // A 2 MiB page cache: rows are appended at the tail and deleted at the head, so the hot
        // pages are few; 8 MiB cost 4-8 MiB of RSS under load for no measured throughput.
        // The page size too (new journals only; an existing file keeps its own): a commit
        // rewrites every page it touches, so at a steady modest load the flash written per
        // commit is about pages touched x page size (docs/architecture.md, "The commit window").
        let pragmas = format!(
            "PRAGMA page_size = {PAGE_SIZE};
             PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {};
             PRAGMA journal_size_limit = 67108864;
             PRAGMA cache_size = -2048;
             PRAGMA temp_store = MEMORY;",
            synchronous(config.synchronous)
        );
        conn.execute_batch(&pragmas).map_err(|e| schema::classify(path, e))?;
        schema::migrate(&conn, path)?;
        Ok(conn)
    }

    /// A connection that cannot write (CLI and API reads), waiting up to 10 s for the
    /// writer's lock. Fails when the file does not exist: reading never creates a journal.
    pub fn read_only(&self) -> Result<Connection, StoreError> {
        let path = &self.path;
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| schema::classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| schema::classify(path, e))?;
        Ok(conn)
    }

    /// A writing connection for the CLI while no gateway runs: it holds the data folder's
    /// lock (so a gateway cannot start meanwhile), which is released when it is dropped.
    pub fn offline_writer(&self) -> Result<OfflineConnection, StoreError> {
        let lock = self.lock()?;
        let path = &self.path;
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| schema::classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| schema::classify(path, e))?;
        Ok(OfflineConnection { conn, _lock: lock })
    }

    /// The downlink's own connection to the command tables (`commands`, `command_status`):
    /// the deliberate second writer of the `store` module essay. Call it only while this
    /// process's writer runs (it holds the lock and made the tables); the tables are made
    /// here too (idempotent), so that a connection never finds them missing.
    pub fn commands_connection(&self, sync: Synchronous) -> Result<Connection, StoreError> {
        let path = &self.path;
        let conn = Connection::open(path).map_err(|e| schema::classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| schema::classify(path, e))?;
        conn.execute_batch(&format!("PRAGMA synchronous = {};", synchronous(sync)))
            .map_err(|e| schema::classify(path, e))?;
        schema::migrate_commands(&conn).map_err(|e| schema::classify(path, e))?;
        Ok(conn)
    }

    /// Takes the data folder's lock: two gateways on one journal would each believe they
    /// own the queue and forward every event twice.
    fn lock(&self) -> Result<std::fs::File, StoreError> {
        let path = self.lock_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::DataDir { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StoreError::Locked { path: self.data_dir.clone(), lock: path })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir { path, source }),
        }
    }
}

/// SQLite page size of a new journal: 1 KiB rather than SQLite's 4 KiB, because each commit
/// writes whole pages to the WAL (BENCHMARKS.md, "Steady load").
pub const PAGE_SIZE: u32 = 1024;

fn synchronous(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

/// The file a run leaves beside a journal it found damaged (`{file}.damaged`), so that the
/// next start refuses it instead of running until the damaged page is read again.
pub fn damaged_marker(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

/// A writing connection that holds the data folder's lock ([`Journal::offline_writer`]).
pub struct OfflineConnection {
    conn: Connection,
    _lock: std::fs::File,
}

impl std::ops::Deref for OfflineConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// An open journal: the stages' handle, what it held at start-up, and its writer.
pub struct Store {
    /// The handle the stages share.
    pub handle: StoreHandle,
    /// What the journal held at start-up.
    pub opened: Opened,
    /// Stops and joins the writer on close or drop.
    pub writer: WriterGuard,
}

/// Owns the writer thread: [`WriterGuard::close`] (or dropping it) asks the writer to
/// commit what it has and stop, and waits for it, so the data folder's lock is released
/// only after the last commit and checkpoint (as mini-redis's `DbDropGuard` owns its `Db`).
pub struct WriterGuard {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
}

impl WriterGuard {
    /// True once the writer thread has ended (on its own, it never should).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the writer and waits for it, without blocking the async runtime.
    pub async fn close(mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Stops the writer and waits for it (blocking).
    pub fn join(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

impl Drop for WriterGuard {
    /// Blocks until the writer has committed and closed: in async code, prefer
    /// [`WriterGuard::close`].
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The start-up prelude for `config`: the route specs of its `[[routes]]`, the journal
/// opened under `[gateway].data_dir`, the writer running. Close it with
/// `store.writer.close().await` (dropping it also stops and joins the writer). The CLI,
/// with no gateway running, calls it the same way with `acks: None`:
/// `store::start(config, &metrics::Metrics::of(config), None)`.
pub fn start(
    config: &Config,
    metrics: impl Into<StoreMeters>,
    acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
) -> Result<Store, StoreError> {
    Journal::of(config).open(&config.store, &RouteSpec::of(config), metrics, acks)
}
