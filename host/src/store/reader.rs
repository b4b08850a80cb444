//! SQLite reads on the asking task's own thread: the lookup a broker waits on, without sqlx's hand-off to a connection thread and back.
//!
//! sqlx drives each SQLite connection from a worker thread of its own: a query is a
//! message there, and its rows and its end are messages back, each a futex wake-up.
//! For a broker's question (one indexed row, asked while Mosquitto's single thread
//! waits for the answer) those wake-ups were most of the node's time (see
//! BENCHMARKS.md, "Credentials at the broker"). A read-only connection queried in
//! place answers in microseconds, less than one hand-off; blocking the async worker
//! that long is the cheaper trade. Writes stay with sqlx: one writer, migrations,
//! transactions. WAL lets these readers see every committed write at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Idle connections kept: one per async worker is enough; more only cost memory.
const MAX_IDLE: usize = 4;

pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: &Path) -> Self {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection (opened on first need), then keeps it.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result.map_err(|e| StoreError::Read(e.to_string()))
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Read(e.to_string()))?;
        // A checkpoint can hold the file briefly; wait for it as sqlx's connections do.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| StoreError::Read(e.to_string()))?;
        Ok(conn)
    }
}
