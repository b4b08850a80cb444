//! `registry`: devices of the authenticated SIM's account, their credentials, config, and data published for them.

use std::sync::Arc;

use bytes::Bytes;

use super::bindings::psk_edge::platform::registry::{DeviceInfo, Host, Sim};
use super::{CapError, CapabilityCtx, Credentials, Platform, SimCaller, WitExpiration};
use crate::identity::is_name;
use crate::provisioning::password_context;
use crate::secrets::random_token;
use crate::store::{CreateDeviceError, DeviceRow, Expiration, NewDevice, ProfileRow, now_ms};

/// `cli` and `usr` are at most 24 characters on the wire; 20 random characters
/// (~119 bits) make a broker-wide clash practically impossible, and the store's
/// unique constraints catch one anyway.
const NAME_LEN: usize = 20;
const PASSWORD_LEN: usize = 24;
const CLASH_RETRIES: usize = 3;
const DEVICE_ID: &str = "{DEVICE_ID}";

/// Something a function asked for that must happen only if its response reaches the
/// SIM: the SIM port commits these after sending and drops them when it refuses to
/// send (an oversized answer must not count, nor rotate a password the device never saw).
pub enum Effect {
    Served {
        account_id: Arc<str>,
        device_id: String,
        /// A fresh password (sealed) that this answer carried.
        new_password: Option<Vec<u8>>,
    },
}

/// The topics a device gets when no profile says otherwise: AWS IoT-style.
pub fn platform_default_profile() -> ProfileRow {
    ProfileRow {
        name: "default".into(),
        publish: vec![format!("sensor/device/{DEVICE_ID}")],
        subscribe: vec![
            format!("command/device/{DEVICE_ID}"),
            "command/device/all".into(),
        ],
        config: Vec::new(),
        expiration: None,
    }
}

/// A topic template inside the account's namespace with the device filled in.
fn topic(account_id: &str, template: &str, device_id: &str) -> String {
    format!("{account_id}/{}", template.replace(DEVICE_ID, device_id))
}

impl Host for CapabilityCtx {
    async fn current_sim(&mut self) -> wasmtime::Result<Sim> {
        let sim = self.sim()?;
        Ok(Sim {
            iccid: sim.iccid.clone(),
            identity_hex: sim.identity_hex.clone(),
            account_id: sim.account_id.to_string(),
        })
    }

    async fn create_device(
        &mut self,
        device_id: String,
        profile: Option<String>,
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        let sim = self.sim()?;
        if !is_name(&device_id) || profile.as_deref().is_some_and(|p| !is_name(p)) {
            return Ok(Err(CapError::Invalid));
        }
        Ok(self
            .platform
            .create_device(sim, &device_id, profile.as_deref())
            .await)
    }

    async fn device(
        &mut self,
        device_id: String,
    ) -> wasmtime::Result<Result<DeviceInfo, CapError>> {
        let sim = self.sim()?;
        let platform = &self.platform;
        Ok(async {
            let row = platform.own_device(sim, &device_id).await?;
            let expiration = platform
                .expiration(&sim.account_id, row.profile.as_deref())
                .await?;
            Ok(DeviceInfo {
                credentials: platform.credentials(sim, &device_id, &row, None)?,
                profile: row.profile,
                expiration: expiration.into(),
                served: u32::try_from(row.served).unwrap_or(u32::MAX),
                // Whole seconds, rounded down: "older than T" holds only once T has passed.
                password_age: u64::try_from((now_ms() - row.password_set_at) / 1000).unwrap_or(0),
            })
        }
        .await)
    }

    async fn serve_credentials(
        &mut self,
        device_id: String,
        rotate: bool,
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        let sim = self.sim()?.clone();
        let row = match self.platform.own_device(&sim, &device_id).await {
            Ok(row) => row,
            Err(e) => return Ok(Err(e)),
        };
        let fresh = if rotate {
            match fresh_password(&self.platform, &sim.account_id, &device_id) {
                Ok(fresh) => Some(fresh),
                Err(e) => return Ok(Err(e)),
            }
        } else {
            None
        };
        let credentials = self.platform.credentials(
            &sim,
            &device_id,
            &row,
            fresh.as_ref().map(|(clear, _)| clear.as_str()),
        );
        if credentials.is_ok() {
            self.effects.push(Effect::Served {
                account_id: sim.account_id.clone(),
                device_id,
                new_password: fresh.map(|(_, sealed)| sealed),
            });
        }
        Ok(credentials)
    }

    async fn config(
        &mut self,
        device_id: String,
        name: String,
    ) -> wasmtime::Result<Result<String, CapError>> {
        let sim = self.sim()?;
        let platform = &self.platform;
        Ok(async {
            platform.own_device(sim, &device_id).await?;
            platform
                .store
                .config(&sim.account_id, &device_id, &name)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or(CapError::NotFound)
        }
        .await)
    }

    async fn publish_data(
        &mut self,
        device_id: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), CapError>> {
        let sim = self.sim()?;
        let platform = &self.platform;
        Ok(async {
            platform.own_device(sim, &device_id).await?;
            let Some(provisioner) = &platform.provisioner else {
                return Err(CapError::Unavailable);
            };
            let device = platform
                .store
                .broker_device(&sim.account_id, &device_id)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or(CapError::NotFound)?;
            // A device's first publish topic is its sensor topic (the profile's order).
            let topic = device.publish.first().ok_or(CapError::Invalid)?;
            provisioner
                .publish(topic, Bytes::from(payload))
                .await
                .map_err(|e| {
                    tracing::warn!(
                        account = &*sim.account_id,
                        device_id,
                        "data not published: {e}"
                    );
                    CapError::Unavailable
                })
        }
        .await)
    }
}

/// A new password in the clear (for the answer) and sealed (for the store).
fn fresh_password(
    platform: &Platform,
    account_id: &str,
    device_id: &str,
) -> Result<(String, Vec<u8>), CapError> {
    let clear = random_token(PASSWORD_LEN).map_err(|e| unavailable(&e))?;
    let sealed = platform
        .sealer
        .seal(&password_context(account_id, device_id), clear.as_bytes())
        .map_err(|e| unavailable(&e))?;
    Ok((clear, sealed))
}

impl Platform {
    async fn create_device(
        &self,
        sim: &SimCaller,
        device_id: &str,
        profile: Option<&str>,
    ) -> Result<Credentials, CapError> {
        let account_id = &*sim.account_id;
        let template = self.profile_for_new_device(account_id, profile).await?;
        let publish: Vec<String> = template
            .publish
            .iter()
            .map(|t| topic(account_id, t, device_id))
            .collect();
        let subscribe: Vec<String> = template
            .subscribe
            .iter()
            .map(|t| topic(account_id, t, device_id))
            .collect();
        for _ in 0..CLASH_RETRIES {
            let client_id = random_token(NAME_LEN).map_err(|e| unavailable(&e))?;
            let username = random_token(NAME_LEN).map_err(|e| unavailable(&e))?;
            let (password, sealed) = fresh_password(self, account_id, device_id)?;
            let device = NewDevice {
                account_id,
                device_id,
                iccid: &sim.iccid,
                client_id: &client_id,
                username: &username,
                sealed_password: &sealed,
                profile,
                publish: &publish,
                subscribe: &subscribe,
                config: &template.config,
            };
            match self.store.create_device(&device).await {
                Ok(()) => {
                    tracing::info!(
                        account = account_id,
                        device_id,
                        iccid = sim.iccid,
                        profile,
                        "device created"
                    );
                    self.device_changed(account_id, device_id);
                    return Ok(Credentials {
                        client_id,
                        username,
                        password,
                    });
                }
                Err(CreateDeviceError::Exists) => return Err(CapError::Conflict),
                Err(CreateDeviceError::NameClash) => continue,
                Err(CreateDeviceError::Store(e)) => return Err(unavailable(&e)),
            }
        }
        tracing::error!(device_id, "could not find a free broker client id");
        Err(CapError::Unavailable)
    }

    /// The named profile, else the account's `default`, else the platform's.
    async fn profile_for_new_device(
        &self,
        account_id: &str,
        name: Option<&str>,
    ) -> Result<ProfileRow, CapError> {
        let stored = self
            .store
            .profile(account_id, name.unwrap_or("default"))
            .await
            .map_err(|e| unavailable(&e))?;
        match (stored, name) {
            (Some(profile), _) => Ok(profile),
            (None, Some(_)) => Err(CapError::NotFound),
            (None, None) => Ok(platform_default_profile()),
        }
    }

    /// The profile's strategy if it has one, else the account's.
    async fn expiration(
        &self,
        account_id: &str,
        profile: Option<&str>,
    ) -> Result<Expiration, CapError> {
        if let Some(name) = profile
            && let Some(expiration) = self
                .store
                .profile(account_id, name)
                .await
                .map_err(|e| unavailable(&e))?
                .and_then(|p| p.expiration)
        {
            return Ok(expiration);
        }
        Ok(self
            .store
            .account_expiration(account_id)
            .await
            .map_err(|e| unavailable(&e))?
            .unwrap_or_default())
    }

    /// The device, if it exists in the SIM's account and this SIM created it.
    async fn own_device(&self, sim: &SimCaller, device_id: &str) -> Result<DeviceRow, CapError> {
        if !is_name(device_id) {
            return Err(CapError::Invalid);
        }
        let row = self
            .store
            .device(&sim.account_id, device_id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or(CapError::NotFound)?;
        if row.iccid != sim.iccid {
            return Err(CapError::Foreign);
        }
        Ok(row)
    }

    fn credentials(
        &self,
        sim: &SimCaller,
        device_id: &str,
        row: &DeviceRow,
        new_password: Option<&str>,
    ) -> Result<Credentials, CapError> {
        let password = match new_password {
            Some(password) => password.to_owned(),
            None => {
                let clear = self
                    .sealer
                    .open(
                        &password_context(&sim.account_id, device_id),
                        &row.sealed_password,
                    )
                    .map_err(|e| unavailable(&e))?;
                String::from_utf8(clear.to_vec()).map_err(|_| CapError::Unavailable)?
            }
        };
        Ok(Credentials {
            client_id: row.client_id.clone(),
            username: row.username.clone(),
            password,
        })
    }

    /// Applies what the sent responses promised: counts, and new passwords (at the broker too).
    pub async fn commit(&self, effects: Vec<Effect>) {
        for effect in effects {
            let Effect::Served {
                account_id,
                device_id,
                new_password,
            } = effect;
            let result = match &new_password {
                None => self.store.record_served(&account_id, &device_id).await,
                // The answer that carried the new password is its first use.
                Some(sealed) => self
                    .store
                    .set_password(&account_id, &device_id, sealed, 1)
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) if new_password.is_some() => {
                    tracing::info!(account = &*account_id, device_id, "password rotated");
                    self.device_changed(&account_id, &device_id);
                }
                Ok(()) => {}
                Err(e) => tracing::error!(
                    account = &*account_id,
                    device_id,
                    "answer sent but not recorded: {e}"
                ),
            }
        }
    }
}

impl From<Expiration> for WitExpiration {
    fn from(e: Expiration) -> Self {
        match e {
            Expiration::OnDemand => WitExpiration::OnDemand,
            Expiration::AtEveryRequest => WitExpiration::AtEveryRequest,
            Expiration::AfterXRequests(n) => WitExpiration::AfterXRequests(n),
            Expiration::TimeBased(secs) => WitExpiration::TimeBased(secs),
        }
    }
}

impl From<WitExpiration> for Expiration {
    fn from(e: WitExpiration) -> Self {
        match e {
            WitExpiration::OnDemand => Expiration::OnDemand,
            WitExpiration::AtEveryRequest => Expiration::AtEveryRequest,
            WitExpiration::AfterXRequests(n) => Expiration::AfterXRequests(n),
            WitExpiration::TimeBased(secs) => Expiration::TimeBased(secs),
        }
    }
}

pub(super) fn unavailable(e: &dyn std::fmt::Display) -> CapError {
    tracing::error!("registry: {e}");
    CapError::Unavailable
}
