//! Secrets at rest and at the door: the master key that seals PSKs and MQTT passwords, and the operator key/secret pair.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;

/// Fills a fresh buffer from the OS generator.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(buf)
}

/// A random string over `[A-Za-z0-9]`; rejection sampling keeps it uniform.
pub fn random_token(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>()? {
            // 248 = 4 * 62: bytes above it would favour the first letters.
            if b < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Broker client ids and usernames (`cli`, `usr`) are at most 24 characters on the
/// wire; 20 random characters (~119 bits) make a broker-wide clash practically
/// impossible, and the store's unique constraints catch one anyway.
pub const BROKER_NAME_LEN: usize = 20;
/// MQTT passwords the platform hands out: 24 characters, ~143 bits.
pub const BROKER_PASSWORD_LEN: usize = 24;

/// AES-256-GCM under the master key. Every ciphertext carries the key's id, so a
/// later key rotation can tell old from new, and is bound to its row by `context`.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    key_id: [u8; KEY_ID_LEN],
    /// Derived from the master key, never the key itself: what [`Sealer::derive`] keys
    /// its HMAC with, so a derived secret reveals nothing of the master key.
    derivation: Zeroizing<[u8; 32]>,
}

impl Sealer {
    /// A fresh MQTT password, in the clear for the one answer that carries it and
    /// sealed under `context` for the store.
    pub fn fresh_password(&self, context: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
        let clear = random_token(BROKER_PASSWORD_LEN)?;
        let sealed = self.seal(context, clear.as_bytes())?;
        Ok((clear, sealed))
    }

    /// A sealer under the 32-byte master key; the key id and the derivation key are
    /// computed from it.
    pub fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest([b"psk-edge key id".as_slice(), key].concat());
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let derivation: [u8; 32] =
            Sha256::digest([b"psk-edge derivation".as_slice(), key].concat()).into();
        Sealer {
            cipher: Aes256Gcm::new(key.into()),
            key_id,
            derivation: Zeroizing::new(derivation),
        }
    }

    /// A secret every node of a deployment computes alike from the shared master key
    /// (64 hex characters, HMAC-SHA-256 of `label`): nothing to distribute or store.
    pub fn derive(&self, label: &str) -> Zeroizing<String> {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&*self.derivation)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(label.as_bytes());
        Zeroizing::new(hex::encode(mac.finalize().into_bytes()))
    }

    /// The master key's id in hex; every sealed value starts with its 4 bytes, so one
    /// sealed under another key is told apart.
    pub fn key_id(&self) -> String {
        hex::encode(self.key_id)
    }

    /// Encrypts `plaintext` bound to `context` (the row it belongs to): key id, nonce,
    /// then ciphertext and tag.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let aad = [&self.key_id[..], context].concat();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok([&self.key_id[..], &nonce[..], &ct].concat())
    }

    /// Decrypts what [`Sealer::seal`] sealed under the same key and `context`; fails on
    /// another key, another context or a tampered value.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < KEY_ID_LEN + NONCE_LEN {
            bail!("sealed value too short");
        }
        let (key_id, rest) = sealed.split_at(KEY_ID_LEN);
        if key_id != self.key_id {
            bail!(
                "sealed under another master key (id {})",
                hex::encode(key_id)
            );
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let aad = [key_id, context].concat();
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("sealed value does not authenticate"))
    }
}

/// What a device's MQTT password is sealed against: it opens for that device only.
pub fn device_password_context(account_id: &str, device_id: &str) -> Vec<u8> {
    format!("pwd:{account_id}/{device_id}").into_bytes()
}

/// What an application's MQTT password is sealed against.
pub fn app_password_context(account_id: &str, name: &str) -> Vec<u8> {
    format!("app:{account_id}/{name}").into_bytes()
}

/// Constant-time equality of two secrets.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Where the master key comes from, in order: the environment, a key file the
/// operator names, or a file generated in the data directory on first start.
pub fn load_master_key(
    env_hex: Option<&str>,
    key_file: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<(Zeroizing<[u8; 32]>, String)> {
    if let Some(hex_key) = env_hex {
        return Ok((
            parse_key(hex_key).context("PSK_EDGE_MASTER_KEY")?,
            "PSK_EDGE_MASTER_KEY".into(),
        ));
    }
    let (path, generate) = match key_file {
        Some(path) => (path.to_path_buf(), false),
        None => (data_dir.join("master.key"), true),
    };
    if path.exists() {
        let text = Zeroizing::new(
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        let key = parse_key(text.trim())
            .with_context(|| format!("master key file {}", path.display()))?;
        return Ok((key, path.display().to_string()));
    }
    if !generate {
        bail!("master key file {} does not exist", path.display());
    }
    let key = Zeroizing::new(random_bytes::<32>()?);
    write_private(&path, &Zeroizing::new(hex::encode(*key) + "\n"))?;
    Ok((key, format!("{} (generated)", path.display())))
}

fn parse_key(hex_key: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key.trim(), &mut key[..])
        .map_err(|_| anyhow::anyhow!("a master key is 64 hex characters"))?;
    Ok(key)
}

/// Writes a file only its owner can read, creating it with mode 0600 from the start
/// so the secret is never briefly world-readable.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The operator key/secret pair that authenticates the admin API. Only a digest of
/// the secret stays in memory; comparison is constant-time.
pub struct OperatorCredentials {
    /// The key half of the pair: the HTTP Basic user name.
    pub key: String,
    secret_digest: [u8; 32],
}

impl OperatorCredentials {
    /// Keeps `key` and only a digest of `secret`.
    pub fn new(key: String, secret: &str) -> Self {
        OperatorCredentials {
            key,
            secret_digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether the pair is this one, in constant time for both parts.
    pub fn verify(&self, key: &str, secret: &str) -> bool {
        let key_ok = Sha256::digest(key.as_bytes()).ct_eq(&Sha256::digest(self.key.as_bytes()));
        let secret_ok = Sha256::digest(secret.as_bytes()).ct_eq(&self.secret_digest);
        bool::from(key_ok & secret_ok)
    }

    /// From `PSK_EDGE_OPERATOR_KEY`/`_SECRET`, else from the 0600 file in the data
    /// directory, generating it on first start. Returns the file path when one is used.
    pub fn load(
        env_key: Option<String>,
        env_secret: Option<Zeroizing<String>>,
        data_dir: &Path,
    ) -> anyhow::Result<(Self, Option<std::path::PathBuf>)> {
        match (env_key, env_secret) {
            (Some(key), Some(secret)) => return Ok((Self::new(key, &secret), None)),
            (None, None) => {}
            _ => bail!("set both PSK_EDGE_OPERATOR_KEY and PSK_EDGE_OPERATOR_SECRET, or neither"),
        }
        let path = data_dir.join("operator.secret");
        if !path.exists() {
            let key = format!("op-{}", random_token(12)?);
            let secret = Zeroizing::new(random_token(32)?);
            write_private(&path, &format!("{key}:{}\n", *secret))?;
        }
        let text = Zeroizing::new(
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        let Some((key, secret)) = text.trim().split_once(':') else {
            bail!("{} must hold KEY:SECRET", path.display());
        };
        Ok((Self::new(key.to_owned(), secret), Some(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let sealer = Sealer::new(&[7u8; 32]);
        let sealed = sealer.seal(b"psk:1", b"secret").unwrap();
        assert_eq!(&sealer.open(b"psk:1", &sealed).unwrap()[..], b"secret");
        assert!(sealer.open(b"psk:2", &sealed).is_err());
        assert!(Sealer::new(&[8u8; 32]).open(b"psk:1", &sealed).is_err());
        assert!(sealer.open(b"psk:1", &sealed[..10]).is_err());
    }

    #[test]
    fn operator_credentials_compare_key_and_secret() {
        let op = OperatorCredentials::new("op".into(), "s3cret");
        assert!(op.verify("op", "s3cret"));
        assert!(!op.verify("op", "s3cret "));
        assert!(!op.verify("other", "s3cret"));
    }

    #[test]
    fn tokens_use_the_alphabet() {
        let t = random_token(40).unwrap();
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
