//! A Mosquitto the platform starts and stops itself: config, dynsec.json and admin password under one directory, on a loopback port remembered there.
//!
//! Layout of the directory:
//! - `mosquitto.conf`: written on every start (edits are overwritten);
//! - `admin.secret`: the dynsec admin's password (0600, never logged);
//! - `state/dynsec.json`: the plugin's clients, roles and salted hashes;
//! - `port`, `mosquitto.pid`: the port to reuse and the running broker.
//!
//! Who the broker runs as: started by an unprivileged user, Mosquitto stays that user
//! and owns nothing special. Started by root, Mosquitto drops to the user `mosquitto`
//! after reading its config and the plugin's file, then rewrites that file on every
//! change as `mosquitto`. A broker parsing device traffic should not run as root, so
//! `state/` is given to `mosquitto`, the directory is made traversable by its group
//! (0710) and the admin password stays root's. If `mosquitto` cannot reach the
//! directory (a 0700 parent, no such user), the broker runs as root with a warning
//! rather than silently losing every change.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

use super::{BrokerUrl, random_hex};

const ADMIN_USER: &str = "psk-edge-admin";
const BROKER_USER: &str = "mosquitto";
const PLUGIN_FILE: &str = "mosquitto_dynamic_security.so";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;
const LOG_TAIL: usize = 30;

/// A Mosquitto process owned by the platform; killed if dropped without `stop`.
pub struct ManagedMosquitto {
    child: Option<Child>,
    port: u16,
    url: BrokerUrl,
    dir: PathBuf,
}

#[derive(Clone, Copy)]
enum RunAs {
    /// Not root: Mosquitto keeps our user.
    Current,
    /// Root: Mosquitto drops to this unprivileged user.
    Unprivileged { uid: u32, gid: u32 },
    /// Root, and the unprivileged user could not write the state.
    Root,
}

impl ManagedMosquitto {
    /// Is Mosquitto with the dynamic-security plugin installed here?
    pub fn available() -> bool {
        Self::tools().is_ok()
    }

    /// Starts Mosquitto with its own config and dynsec.json under `dir`, on a free
    /// loopback port that is kept in `dir/port` and reused while it stays free.
    /// Returns once the port accepts connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let tools = Self::tools()?;
        if dir.to_string_lossy().chars().any(char::is_whitespace) {
            // Mosquitto's config format splits values at spaces.
            bail!(
                "the broker directory {} must not contain whitespace",
                dir.display()
            );
        }
        create_dir(dir, 0o700)?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        stop_stale(&dir).await;

        let run_as = decide_run_as(&dir);
        let state = dir.join("state");
        create_dir(&state, 0o700)?;
        let password = admin_password(&dir)?;
        let dynsec_file = state.join("dynsec.json");
        if !dynsec_file.exists() {
            init_dynsec(&tools.ctrl, &dynsec_file, &password).await?;
        }
        set_mode(&dynsec_file, 0o600)?;
        if let RunAs::Unprivileged { uid, gid } = run_as {
            for path in [&state, &dynsec_file] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("giving {} to {BROKER_USER}", path.display()))?;
            }
            std::os::unix::fs::chown(&dir, None, Some(gid))
                .with_context(|| format!("letting {BROKER_USER} into {}", dir.display()))?;
            set_mode(&dir, 0o710)?;
        } else {
            set_mode(&dir, 0o700)?;
        }

        let mut avoid = None;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = choose_port(&dir, avoid)?;
            let config = dir.join("mosquitto.conf");
            write_config(&config, port, &tools.plugin, &dynsec_file, run_as)?;
            match spawn(&tools.mosquitto, &config, port).await {
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
                    let url =
                        BrokerUrl::new(Ipv4Addr::LOCALHOST.to_string(), port, ADMIN_USER, password);
                    return Ok(ManagedMosquitto {
                        child: Some(child),
                        port,
                        url,
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

    /// The admin URL to give `DynSec::connect`.
    pub fn url(&self) -> BrokerUrl {
        self.url.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

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

    fn tools() -> anyhow::Result<Tools> {
        let mosquitto = find_program("mosquitto")
            .context("mosquitto is not installed (Debian package `mosquitto`)")?;
        let ctrl = find_program("mosquitto_ctrl")
            .context("mosquitto_ctrl is not installed (Debian package `mosquitto`)")?;
        let plugin = find_plugin()
            .context("the dynamic-security plugin is not installed (Debian package `mosquitto`)")?;
        Ok(Tools {
            mosquitto,
            ctrl,
            plugin,
        })
    }
}

impl Drop for ManagedMosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

struct Tools {
    mosquitto: PathBuf,
    ctrl: PathBuf,
    plugin: PathBuf,
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

fn find_plugin() -> Option<PathBuf> {
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    [
        multiarch.as_str(),
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join(PLUGIN_FILE))
    .find(|p| p.is_file())
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

fn admin_password(dir: &Path) -> anyhow::Result<Zeroizing<String>> {
    let path = dir.join("admin.secret");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let password = text.trim();
            if password.is_empty() {
                bail!("{} is empty", path.display());
            }
            Ok(Zeroizing::new(password.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("state/dynsec.json").exists() {
                bail!(
                    "{} is missing while state/dynsec.json exists: its admin password is lost; \
                     remove state/dynsec.json to start over (devices are provisioned again)",
                    path.display()
                );
            }
            let password = Zeroizing::new(
                random_hex(24).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?,
            );
            write_file(&path, password.as_bytes(), 0o600)?;
            Ok(password)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `mosquitto_ctrl dynsec init`, with the password on stdin so it never shows in a process list.
async fn init_dynsec(ctrl: &Path, file: &Path, password: &str) -> anyhow::Result<()> {
    let fresh = file.with_extension("json.init");
    let _ = std::fs::remove_file(&fresh);
    let mut child = Command::new(ctrl)
        .args(["dynsec", "init"])
        .arg(&fresh)
        .arg(ADMIN_USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", ctrl.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // It asks twice: new password, then again to confirm.
        let input = Zeroizing::new(format!("{password}\n{password}\n"));
        stdin
            .write_all(input.as_bytes())
            .await
            .context("giving mosquitto_ctrl the admin password")?;
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("mosquitto_ctrl dynsec init did not finish")??;
    if !output.status.success() || !fresh.is_file() {
        bail!(
            "mosquitto_ctrl dynsec init failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    set_mode(&fresh, 0o600)?;
    std::fs::rename(&fresh, file)
        .with_context(|| format!("renaming {} into place", fresh.display()))
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
    RunAs::Unprivileged { uid, gid }
}

fn traversable(dir: &Path, uid: u32, gid: u32) -> bool {
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
    plugin: &Path,
    dynsec_file: &Path,
    run_as: RunAs,
) -> anyhow::Result<()> {
    let user = match run_as {
        RunAs::Current => String::new(),
        RunAs::Unprivileged { .. } => format!("user {BROKER_USER}\n"),
        RunAs::Root => "user root\n".into(),
    };
    let mode = match run_as {
        // A reload (SIGHUP) reads the config again after the privilege drop.
        RunAs::Unprivileged { .. } => 0o640,
        RunAs::Current | RunAs::Root => 0o600,
    };
    let config = format!(
        "# Written by psk-edge on every start: changes here are overwritten.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         # Without it every $CONTROL round trip waits ~50 ms for Nagle.\n\
         set_tcp_nodelay true\n\
         persistence false\n\
         log_dest stderr\n\
         log_timestamp false\n\
         {user}\
         plugin {}\n\
         plugin_opt_config_file {}\n\
         listener {port} 127.0.0.1\n",
        plugin.display(),
        dynsec_file.display(),
    );
    write_file(path, config.as_bytes(), mode)?;
    if let RunAs::Unprivileged { gid, .. } = run_as {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("letting {BROKER_USER} read {}", path.display()))?;
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

/// Mosquitto's log into ours. Its dynsec lines show usernames, never passwords.
async fn forward_log(
    stderr: tokio::process::ChildStderr,
    port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("Error saving Dynamic security plugin config") {
            tracing::error!(target: "mosquitto", port, "{line} (changes to devices are not being saved)");
        } else if line.starts_with("Error") {
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
