//! A Mosquitto the platform starts and stops itself, with the psk-edge plugin asking this node: config and broker key under one directory, on a loopback port remembered there.
//!
//! Layout of the directory:
//! - `mosquitto.conf`: written on every start (edits are overwritten);
//! - `broker.key`: the key the plugin presents to the node (0600, never logged);
//! - `port`, `mosquitto.pid`: the port to reuse and the running broker.
//!
//! The broker keeps no state of its own (`persistence false`, no per-device
//! anything): every question goes to the node, so a restart needs nothing pushed.
//!
//! - `libpsk_edge_mosquitto.so`: a copy of the plugin, loaded from here.
//!
//! Who the broker runs as: started by an unprivileged user, Mosquitto stays that
//! user. Started by root, it drops to the user `mosquitto` (a broker parsing device
//! traffic should not run as root) before it loads the plugin, so the directory,
//! the plugin copy and the key are given to that user's group (0710, 0750, 0640). If
//! `mosquitto` cannot reach the directory (a 0700 parent, no such user), the broker
//! runs as root with a warning.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BrokerUrl;

const BROKER_USER: &str = "mosquitto";
/// What `cargo build` names the plugin of this workspace.
pub const PLUGIN_FILE: &str = "libpsk_edge_mosquitto.so";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;
const LOG_TAIL: usize = 30;

/// A Mosquitto process owned by the platform; killed if dropped without `stop`.
pub struct ManagedMosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// How a managed broker reaches its node.
pub struct PluginSetup<'a> {
    /// The plugin file (`libpsk_edge_mosquitto.so`).
    pub plugin: &'a Path,
    /// The node's broker endpoint, `http://127.0.0.1:PORT`.
    pub node_url: &'a str,
    /// The bearer token the plugin presents to the node's broker endpoint.
    pub broker_key: &'a str,
}

#[derive(Clone, Copy)]
enum RunAs {
    /// Not root: Mosquitto keeps our user.
    Current,
    /// Root: Mosquitto drops to the unprivileged user (of this group) before it
    /// loads the plugin.
    Unprivileged { gid: u32 },
    /// Root, and no unprivileged user that could reach the directory.
    Root,
}

impl ManagedMosquitto {
    /// Is Mosquitto installed here?
    pub fn available() -> bool {
        find_program("mosquitto").is_some()
    }

    /// The plugin built beside this executable (cargo puts both in one directory), if any.
    pub fn plugin_beside_executable() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        // Test binaries run from `deps/`, one level below.
        [dir.to_path_buf(), dir.parent()?.to_path_buf()]
            .into_iter()
            .map(|d| d.join(PLUGIN_FILE))
            .find(|p| p.is_file())
    }

    /// Starts Mosquitto with its own config under `dir`, the plugin asking the node
    /// at `setup.node_url`, on a free loopback port that is kept in `dir/port` and
    /// reused while it stays free. Returns once the port accepts connections.
    pub async fn start(dir: &Path, setup: &PluginSetup<'_>) -> anyhow::Result<Self> {
        let mosquitto = find_program("mosquitto")
            .context("mosquitto is not installed (Debian package `mosquitto`)")?;
        if !setup.plugin.is_file() {
            bail!(
                "the broker plugin {} does not exist (cargo build -p psk-edge-mosquitto)",
                setup.plugin.display()
            );
        }
        for path in [dir, setup.plugin] {
            if path.to_string_lossy().chars().any(char::is_whitespace) {
                // Mosquitto's config format splits values at spaces.
                bail!("{} must not contain whitespace", path.display());
            }
        }
        create_dir(dir, 0o700)?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        stop_stale(&dir).await;
        // What a broker of an earlier version kept here holds hashes of device passwords.
        for stale in ["state", "admin.secret"] {
            let path = dir.join(stale);
            if path.exists() {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("removing {}", path.display()))?;
            }
        }
        let run_as = decide_run_as(&dir);
        let key_file = dir.join("broker.key");
        // Mosquitto 2.0 drops its privileges before it loads plugins: the plugin and
        // the key must be readable by the user it becomes, so the plugin is copied in
        // beside the key and both are given to that user's group.
        let plugin = dir.join(PLUGIN_FILE);
        let copied = plugin.with_extension("so.tmp");
        std::fs::copy(setup.plugin, &copied).with_context(|| {
            format!("copying {} into {}", setup.plugin.display(), dir.display())
        })?;
        std::fs::rename(&copied, &plugin)
            .with_context(|| format!("renaming {} into place", copied.display()))?;
        write_file(&key_file, setup.broker_key.as_bytes(), 0o600)?;
        if let RunAs::Unprivileged { gid } = run_as {
            for (path, mode) in [(&dir, 0o710), (&key_file, 0o640), (&plugin, 0o750)] {
                std::os::unix::fs::chown(path, None, Some(gid))
                    .with_context(|| format!("letting {BROKER_USER} read {}", path.display()))?;
                set_mode(path, mode)?;
            }
        } else {
            set_mode(&dir, 0o700)?;
            set_mode(&plugin, 0o700)?;
        }
        let setup = &PluginSetup {
            plugin: &plugin,
            ..*setup
        };

        let mut avoid = None;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = choose_port(&dir, avoid)?;
            let config = dir.join("mosquitto.conf");
            write_config(&config, port, setup, &key_file, run_as)?;
            match spawn(&mosquitto, &config, port).await {
                Ok(child) => {
                    write_file(
                        &dir.join("mosquitto.pid"),
                        child.id().unwrap_or(0).to_string().as_bytes(),
                        0o600,
                    )?;
                    tracing::info!(
                        "managed broker listening on 127.0.0.1:{port} (directory {})",
                        dir.display()
                    );
                    return Ok(ManagedMosquitto {
                        child: Some(child),
                        port,
                        dir,
                    });
                }
                Err(StartError::PortTaken(e)) => {
                    // Someone took the port between our check and Mosquitto's bind.
                    avoid = Some(port);
                    last_error = Some(e);
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the broker did not start")))
    }

    /// Where the platform's own connection goes.
    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::new(Ipv4Addr::LOCALHOST.to_string(), self.port)
    }

    /// The loopback port Mosquitto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding this broker's config, key, plugin, pid and port files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGTERM, then waits (SIGKILL after a few seconds).
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            signal(pid, libc::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    "the managed broker ignored SIGTERM for {STOP_TIMEOUT:?}; killing it"
                );
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_file(self.dir.join("mosquitto.pid"));
        tracing::info!("managed broker on port {} stopped", self.port);
    }
}

impl Drop for ManagedMosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    // Debian puts the broker in /usr/sbin, which is not on an ordinary user's PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn create_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes through a temporary file, so a crash never leaves half a file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; a wrong pid only yields an error code.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The uid and gid of a system user, through NSS.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: passwd is plain data (integers and pointers) for which all-zero is valid.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf's length is passed with it;
    // only the integer fields of `entry` are read afterwards.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    Some((entry.pw_uid, entry.pw_gid))
}

fn decide_run_as(dir: &Path) -> RunAs {
    if euid() != 0 {
        return RunAs::Current;
    }
    let Some((uid, gid)) = lookup_user(BROKER_USER) else {
        tracing::warn!("no user `{BROKER_USER}` to run the managed broker as; it runs as root");
        return RunAs::Root;
    };
    if let Some(blocked) = dir.ancestors().skip(1).find(|a| !traversable(a, uid, gid)) {
        tracing::warn!(
            "user `{BROKER_USER}` cannot reach {} ({} is closed to it); the managed broker runs as root. \
             Make the parents traversable (e.g. chmod o+x) to run it unprivileged",
            dir.display(),
            blocked.display()
        );
        return RunAs::Root;
    }
    RunAs::Unprivileged { gid }
}

fn traversable(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = dir.metadata() else {
        return false;
    };
    let mode = meta.mode();
    mode & 0o001 != 0
        || (meta.gid() == gid && mode & 0o010 != 0)
        || (meta.uid() == uid && mode & 0o100 != 0)
}

/// The saved port if it is still free, else a fresh one the kernel picks (never one in use).
fn choose_port(dir: &Path, avoid: Option<u16>) -> anyhow::Result<u16> {
    let file = dir.join("port");
    let saved = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok());
    if let Some(port) = saved.filter(|p| *p != 0 && Some(*p) != avoid && port_free(*p)) {
        return Ok(port);
    }
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    write_file(&file, port.to_string().as_bytes(), 0o600)?;
    Ok(port)
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn write_config(
    path: &Path,
    port: u16,
    setup: &PluginSetup<'_>,
    key_file: &Path,
    run_as: RunAs,
) -> anyhow::Result<()> {
    let user = match run_as {
        RunAs::Current => String::new(),
        RunAs::Unprivileged { .. } => format!("user {BROKER_USER}\n"),
        RunAs::Root => "user root\n".into(),
    };
    let config = format!(
        "# Written by psk-edge on every start: changes here are overwritten.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         # The platform's own connection carries revocations: no Nagle delay on them.\n\
         set_tcp_nodelay true\n\
         # Three lines per connect and disconnect would make a fleet's reconnect storm\n\
         # the broker's and the node's main work; refusals are logged by the node.\n\
         connection_messages false\n\
         persistence false\n\
         log_dest stderr\n\
         log_timestamp false\n\
         {user}\
         plugin {}\n\
         plugin_opt_url {}\n\
         plugin_opt_key_file {}\n\
         listener {port} 127.0.0.1\n",
        setup.plugin.display(),
        setup.node_url,
        key_file.display(),
    );
    write_file(path, config.as_bytes(), 0o600)?;
    if let RunAs::Unprivileged { gid } = run_as {
        // A reload (SIGHUP) reads the config again after the privilege drop.
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("letting {BROKER_USER} read {}", path.display()))?;
        set_mode(path, 0o640)?;
    }
    Ok(())
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

async fn spawn(mosquitto: &Path, config: &Path, port: u16) -> Result<Child, StartError> {
    let mut command = Command::new(mosquitto);
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent. It makes a
    // platform that dies without stopping its broker (SIGKILL, a crash) take it along.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C reaches the platform, which stops the broker in order.
        .process_group(0)
        .spawn()
        .map_err(|e| StartError::Other(anyhow::anyhow!("starting {}: {e}", mosquitto.display())))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_log(stderr, port, tail.clone()));
    }
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Let the log forwarder catch the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let log = tail
                .lock()
                .iter()
                .cloned()
                .collect::<Vec<String>>()
                .join("\n");
            let error = anyhow::anyhow!("mosquitto exited at start ({status}):\n{log}");
            return Err(if log.contains("Address already in use") {
                StartError::PortTaken(error)
            } else {
                StartError::Other(error)
            });
        }
        if tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(StartError::Other(anyhow::anyhow!(
                "mosquitto did not accept connections on port {port} within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Mosquitto's log into ours. Neither it nor the plugin logs a password.
async fn forward_log(
    stderr: tokio::process::ChildStderr,
    port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("Error") {
            tracing::error!(target: "mosquitto", port, "{line}");
        } else if line.starts_with("Warning") {
            tracing::warn!(target: "mosquitto", port, "{line}");
        } else {
            tracing::debug!(target: "mosquitto", port, "{line}");
        }
        let mut tail = tail.lock();
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// A broker left running by a platform that died holds the port and the plugin's
/// file: stop it before starting another on the same directory.
async fn stop_stale(dir: &Path) {
    let pid_file = dir.join("mosquitto.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let config = dir.join("mosquitto.conf");
    let ours = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"mosquitto"))
                && args
                    .iter()
                    .any(|a| *a == config.as_os_str().as_encoded_bytes())
        })
    };
    if !ours(pid) {
        return;
    }
    tracing::warn!("stopping a managed broker left running (pid {pid})");
    signal(pid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while ours(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours(pid) {
        signal(pid, libc::SIGKILL);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&pid_file);
}
