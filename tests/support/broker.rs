//! A Mosquitto the test starts itself with the psk-edge plugin, configured with the lines README.md gives an operator.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The plugin cargo built beside the `psk-edge` binary; a test without it fails.
pub fn plugin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_psk-edge"));
    let plugin = exe.parent().unwrap().join("libpsk_edge_mosquitto.so");
    assert!(
        plugin.is_file(),
        "{} is missing: build it with `cargo build -p psk-edge-mosquitto`",
        plugin.display()
    );
    plugin
}

pub fn mosquitto() -> PathBuf {
    let found = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    found.expect("mosquitto is not installed (Debian package `mosquitto`): this test needs it")
}

/// A free loopback port (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `mosquitto.conf` lines README.md shows for loading the plugin into an
/// operator's own Mosquitto, with its placeholders filled in.
pub fn readme_lines(plugin: &Path, node_endpoint: &str, key_file: &Path) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("```conf\n# psk-edge plugin")
        .expect("README.md has no ```conf block starting with `# psk-edge plugin`");
    let block = &readme[start + "```conf\n".len()..];
    let block = &block[..block.find("```").expect("the conf block ends")];
    block
        .replace(
            "/usr/local/lib/libpsk_edge_mosquitto.so",
            &plugin.display().to_string(),
        )
        .replace("http://127.0.0.1:11112", &format!("http://{node_endpoint}"))
        .replace(
            "/var/lib/psk-edge/broker.key",
            &key_file.display().to_string(),
        )
}

pub struct TestBroker {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
}

impl TestBroker {
    /// Mosquitto on `port` (127.0.0.1), loading the plugin with README's lines, asking
    /// the node at `node_endpoint` with the key in `key_file`.
    pub async fn start(dir: &Path, port: u16, node_endpoint: &str, key_file: &Path) -> TestBroker {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("mosquitto.conf");
        let lines = readme_lines(&plugin(), node_endpoint, key_file);
        std::fs::write(
            &config,
            // As root, Mosquitto would drop to `mosquitto` before loading the plugin,
            // which cannot reach a test's private temporary directory.
            format!(
                "{lines}listener {port} 127.0.0.1\nlog_dest stderr\nset_tcp_nodelay true\n{}",
                if unsafe_euid() == 0 {
                    "user root\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let mut broker = TestBroker {
            child: None,
            port,
            dir: dir.to_path_buf(),
            config,
        };
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("mosquitto.log")).unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen on {}:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

#[allow(unsafe_code)] // geteuid: std has no safe form of it
fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log());
        }
    }
}
