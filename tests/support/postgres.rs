//! A PostgreSQL for tests: a temporary cluster on a free loopback port that lives and dies with the test process.
//!
//! `PSK_EDGE_TEST_POSTGRES=postgres://USER@HOST:PORT` points the shared cluster at a
//! server that is already running instead; tests that restart PostgreSQL always start
//! their own. Run as root, the cluster runs as the `postgres` user (PostgreSQL refuses
//! root). Each postgres process dies with the thread that started it (PDEATHSIG), so
//! a killed test run leaves no server behind.

#![allow(unsafe_code)] // process control of the test clusters: uid lookup, dropping root, signals
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which backend the suite runs against: `PSK_EDGE_TEST_BACKEND=postgres`, else SQLite.
pub fn postgres_mode() -> bool {
    std::env::var("PSK_EDGE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

pub struct Cluster {
    /// Without a data directory: a server someone else runs.
    data: Option<PathBuf>,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    server: Mutex<Option<Server>>,
    base_url: String,
}

struct Server {
    pid: i32,
    thread: std::thread::JoinHandle<()>,
}

/// The cluster every test of this process shares; each test uses databases of its own.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("PSK_EDGE_TEST_POSTGRES") {
        Ok(url) => Cluster {
            data: None,
            bin: bin_dir(),
            port: 0,
            user: None,
            server: Mutex::new(None),
            base_url: url.trim_end_matches('/').to_owned(),
        },
        Err(_) => Cluster::start(),
    })
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .map(|v| v.join("bin"))
        .filter(|b| b.join("postgres").exists())
        .expect("PostgreSQL is not installed (scripts/setup.sh installs it)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The uid and gid of `postgres` when running as root: PostgreSQL will not run as root.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam returns a pointer into static
    // storage that is read at once, on this thread, before any other getpw* call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "running as root needs a postgres user");
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>, die_with_parent: bool) {
    // SAFETY: only async-signal-safe calls between fork and exec. The parent-death
    // signal is set after the uid change, which would otherwise clear it.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Cluster {
    /// initdb into a fresh directory and start a server on a free loopback port.
    pub fn start() -> Cluster {
        remove_stale_clusters();
        let bin = bin_dir();
        let user = postgres_user();
        let data = std::env::temp_dir().join(format!(
            "psk-edge-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&data).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user, false);
        let out = initdb.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let cluster = Cluster {
            data: Some(data),
            bin,
            port,
            user,
            server: Mutex::new(None),
            base_url: format!("postgres://postgres@127.0.0.1:{port}"),
        };
        cluster.resume();
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A fresh, empty database on this cluster; its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("already exists"),
            "create database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base_url)
    }

    /// One SQL command through psql; its output.
    pub fn psql(&self, database: &str, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .arg(self.url(database))
            .args(["-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql])
            .output()
            .expect("running psql")
    }

    /// Every row of a database as text, for checks that a secret is not in it.
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .arg("--data-only")
            .arg(self.url(database))
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Stops the server at once (clients see their connections drop).
    pub fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            // SAFETY: plain kill(2) on a process this cluster started.
            unsafe { libc::kill(server.pid, libc::SIGINT) };
            let _ = server.thread.join();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&self) {
        let data = self.data.as_ref().expect("a cluster this test started");
        let mut server = self.server.lock().unwrap();
        assert!(server.is_none(), "already running");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D").arg(data).args(["-p", &self.port.to_string()]);
        for setting in [
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", data.display()),
            // Nothing here must survive a crash of the machine: trade durability for speed.
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "max_connections=400".into(),
            "shared_buffers=64MB".into(),
        ] {
            cmd.args(["-c", &setting]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd, self.user, true);
        // The parent-death signal fires when the *thread* that forked exits, so the
        // server gets a thread of its own that lives exactly as long as it does.
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id() as i32));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        let pid = rx.recv().unwrap().expect("starting postgres");
        *server = Some(Server { pid, thread });
        drop(server);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.psql("postgres", "SELECT 1").status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data.as_deref()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(data) = &self.data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// Clusters of test processes that are gone (a shared one is never dropped).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("psk-edge-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A database name unique to this process and call.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
