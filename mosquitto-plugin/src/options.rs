//! The plugin's `plugin_opt_*` settings: parsing, validation and the summary logged at start.
//!
//! Everything that can be wrong is refused here, at init, so that a misconfigured broker
//! does not start rather than starting and denying every client.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use zeroize::Zeroizing;

pub const DEFAULT_TIMEOUT_MS: u64 = 250;
pub const MAX_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_CACHE_SECONDS: u64 = 300;
pub const DEFAULT_CACHE_SIZE: usize = 100_000;
/// A key is a token, not a document: a bigger file is the wrong file.
const MAX_KEY_LEN: usize = 4096;

/// Where the node answers: `http://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    /// Resolved once at init: a DNS lookup inside a callback would block the broker loop
    /// without any bound we control.
    pub addrs: Vec<SocketAddr>,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub base_path: String,
}

impl NodeUrl {
    pub fn parse(url: &str) -> Result<NodeUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            if url.starts_with("https://") {
                return Err(format!(
                    "{url:?}: https is not supported; the node's broker endpoint is plain http on loopback or a trusted link"
                ));
            }
            return Err(format!("{url:?}: expected http://host:port"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{url:?}: expected http://host:port (no credentials in the url)"
            ));
        }
        if path.contains(['?', '#']) || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(format!("{url:?}: no query, fragment or spaces in the url"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("{url:?}: bad host or port"))?;
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|err| format!("{url:?}: cannot resolve {host}: {err}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{url:?}: {host} resolves to no address"));
        }
        Ok(NodeUrl {
            addrs,
            authority: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        match &rest[end + 1..] {
            "" => (host, None),
            port => (host, Some(port.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => 80,
        Some(port) => port.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    Some((host, port))
}

pub struct Options {
    pub url: NodeUrl,
    pub key_file: String,
    pub key: Zeroizing<String>,
    pub timeout: Duration,
    /// `None`: verified passwords are never reused.
    pub cache_ttl: Option<Duration>,
    pub cache_size: usize,
}

impl Options {
    /// From the `(key, value)` pairs mosquitto hands the plugin (`plugin_opt_` already
    /// stripped). Unknown keys are refused: a typo would otherwise silently mean a default.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Options, String> {
        let mut url = None;
        let mut key_file = None;
        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        let mut cache_seconds = DEFAULT_CACHE_SECONDS;
        let mut cache_size = DEFAULT_CACHE_SIZE;
        for (key, value) in pairs {
            let value = value.trim();
            match key {
                "url" => {
                    url = Some(NodeUrl::parse(value).map_err(|e| format!("plugin_opt_url {e}"))?)
                }
                "key_file" => key_file = Some(value.to_owned()),
                "timeout_ms" => {
                    timeout_ms = value
                        .parse()
                        .ok()
                        .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
                        .ok_or_else(|| {
                            format!(
                                "plugin_opt_timeout_ms {value:?}: expected 1..={MAX_TIMEOUT_MS}"
                            )
                        })?;
                }
                "cache_seconds" => {
                    cache_seconds = value
                        .parse()
                        .ok()
                        .filter(|s| *s <= 30 * 86_400)
                        .ok_or_else(|| {
                            format!("plugin_opt_cache_seconds {value:?}: expected 0..=2592000")
                        })?;
                }
                "cache_size" => {
                    cache_size = value.parse().map_err(|_| {
                        format!("plugin_opt_cache_size {value:?}: expected a count")
                    })?;
                }
                other => return Err(format!("unknown option plugin_opt_{other}")),
            }
        }
        let url = url.ok_or("plugin_opt_url is required (http://127.0.0.1:PORT of the node)")?;
        let key_file = key_file.ok_or("plugin_opt_key_file is required")?;
        let key = read_key(&key_file)?;
        Ok(Options {
            url,
            key_file,
            key,
            timeout: Duration::from_millis(timeout_ms),
            cache_ttl: (cache_seconds > 0).then(|| Duration::from_secs(cache_seconds)),
            cache_size,
        })
    }
}

fn read_key(path: &str) -> Result<Zeroizing<String>, String> {
    let file = Zeroizing::new(std::fs::read(path).map_err(|err| {
        // Mosquitto 2.0 loads plugins after dropping privileges (`drop_privileges` runs
        // before `mosquitto_security_module_init`), so the file must be readable by the
        // unprivileged user, not only by root.
        let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
            " (the broker reads it after dropping privileges: make it readable by mosquitto.conf's `user`, default `mosquitto`, e.g. root:mosquitto 0640)"
        } else {
            ""
        };
        format!("plugin_opt_key_file {path}: {err}{hint}")
    })?);
    if file.len() > MAX_KEY_LEN {
        return Err(format!(
            "plugin_opt_key_file {path}: longer than {MAX_KEY_LEN} bytes"
        ));
    }
    let text =
        std::str::from_utf8(&file).map_err(|_| format!("plugin_opt_key_file {path}: not text"))?;
    let key = text.trim();
    // It goes into a header line: visible ASCII only, so it can neither break the request
    // nor be mangled on the way.
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "plugin_opt_key_file {path}: expected one line of printable ASCII without spaces"
        ));
    }
    Ok(Zeroizing::new(key.to_owned()))
}

/// What init logs: every option, never the key.
impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "url=http://{}{} ({}) key_file={} timeout_ms={} cache_seconds={} cache_size={}",
            self.url.authority,
            self.url.base_path,
            self.url
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.key_file,
            self.timeout.as_millis(),
            self.cache_ttl.map_or(0, |ttl| ttl.as_secs()),
            self.cache_size,
        )
    }
}

/// Debug shows the same as Display: the key stays out of every rendering.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key_file(contents: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(contents)
    }

    /// A file that removes itself: enough for these tests, no extra dependency.
    pub(crate) mod tempfile_lite {
        use std::sync::atomic::{AtomicU64, Ordering};

        pub(crate) struct TempFile(pub std::path::PathBuf);

        impl TempFile {
            pub(crate) fn new(contents: &str) -> TempFile {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "psk-edge-mosquitto-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, contents).unwrap();
                TempFile(path)
            }

            pub(crate) fn path(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_and_required() {
        let key = key_file("s3cret-key\n");
        let options =
            Options::parse([("url", "http://127.0.0.1:8080"), ("key_file", key.path())]).unwrap();
        assert_eq!(options.url.addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(options.url.authority, "127.0.0.1:8080");
        assert_eq!(options.url.base_path, "");
        assert_eq!(*options.key, "s3cret-key");
        assert_eq!(options.timeout, Duration::from_millis(250));
        assert_eq!(options.cache_ttl, Some(Duration::from_secs(300)));
        assert_eq!(options.cache_size, 100_000);
        let shown = options.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("timeout_ms=250"), "{shown}");

        assert!(
            Options::parse([("key_file", key.path())])
                .unwrap_err()
                .contains("plugin_opt_url")
        );
        assert!(
            Options::parse([("url", "http://127.0.0.1:1")])
                .unwrap_err()
                .contains("key_file")
        );
    }

    #[test]
    fn values_are_checked() {
        let key = key_file("k");
        let with = |extra: (&'static str, &'static str)| {
            Options::parse([
                ("url", "http://127.0.0.1:8080"),
                ("key_file", key.path()),
                extra,
            ])
        };
        let options = with(("timeout_ms", "5000")).unwrap();
        assert_eq!(options.timeout, Duration::from_secs(5));
        for bad in ["0", "5001", "-1", "x", ""] {
            assert!(with(("timeout_ms", bad)).is_err(), "{bad}");
        }
        assert_eq!(with(("cache_seconds", "0")).unwrap().cache_ttl, None);
        assert_eq!(
            with(("cache_seconds", " 60 ")).unwrap().cache_ttl,
            Some(Duration::from_secs(60))
        );
        assert!(with(("cache_seconds", "-5")).is_err());
        assert_eq!(with(("cache_size", "0")).unwrap().cache_size, 0);
        assert!(with(("cache_size", "many")).is_err());
        assert!(
            with(("cache_secs", "5"))
                .unwrap_err()
                .contains("unknown option plugin_opt_cache_secs")
        );
    }

    #[test]
    fn urls() {
        let url = NodeUrl::parse("http://[::1]:9000/edge/").unwrap();
        assert_eq!(url.addrs, vec!["[::1]:9000".parse().unwrap()]);
        assert_eq!(url.authority, "[::1]:9000");
        assert_eq!(url.base_path, "/edge");
        assert_eq!(
            NodeUrl::parse("http://127.0.0.1").unwrap().addrs[0].port(),
            80
        );
        assert!(
            !NodeUrl::parse("http://localhost:9")
                .unwrap()
                .addrs
                .is_empty()
        );
        let https = NodeUrl::parse("https://127.0.0.1:443").unwrap_err();
        assert!(https.contains("https is not supported"), "{https}");
        for bad in [
            "127.0.0.1:80",
            "ftp://x:1",
            "http://",
            "http://:80",
            "http://u:p@127.0.0.1:80",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:80/a?b",
            "http://a b:80",
        ] {
            assert!(NodeUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_file_contents() {
        let url = ("url", "http://127.0.0.1:8080");
        for bad in ["", "  \n", "two words", "tab\there", "line\nline"] {
            let key = key_file(bad);
            assert!(
                Options::parse([url, ("key_file", key.path())]).is_err(),
                "{bad:?}"
            );
        }
        let missing = Options::parse([url, ("key_file", "/nonexistent/psk-edge-key")]).unwrap_err();
        assert!(missing.contains("/nonexistent/psk-edge-key"), "{missing}");
    }
}
