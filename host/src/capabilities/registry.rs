//! `registry`: devices of the authenticated SIM's account, their credentials, config, and data published for them.

use std::sync::Arc;

use bytes::Bytes;
use wire::identity::is_name;
use wire::topics::{DEFAULT_PUBLISH, DEFAULT_SUBSCRIBE, expand as topic};

use super::bindings::psk_edge::platform::registry::{DeviceInfo, Host, Sim};
use super::{CapError, CapabilityCtx, Credentials, Platform, Seen, SimCaller, WitExpiration};
use crate::secrets::{BROKER_NAME_LEN, device_password_context as password_context, random_token};
use crate::store::{
    Claim, CreateDeviceError, DeviceRow, Expiration, NewDevice, PreviousPassword, ProfileRow,
    StoreError, now_ms,
};

/// Fresh broker names to try when one clashes with a name already taken.
pub(super) const CLASH_RETRIES: usize = 3;

/// A credential answer already counted in the store that is final only once its
/// response reaches the SIM: the SIM port commits it after sending (the broker learns
/// a new password then) and undoes it when the answer never leaves (an oversized
/// answer, a failed function) so that it neither counts nor rotates.
pub enum Effect {
    /// A credential answer for a device was counted (and maybe rotated its password).
    Served {
        /// The device's account.
        account_id: Arc<str>,
        /// The device's id.
        device_id: String,
        /// What the store counted, to commit or undo.
        claim: Claim,
    },
}

/// The topics a device gets when no profile says otherwise: AWS IoT-style.
pub fn platform_default_profile() -> ProfileRow {
    ProfileRow {
        name: "default".into(),
        publish: DEFAULT_PUBLISH.iter().map(|t| (*t).to_owned()).collect(),
        subscribe: DEFAULT_SUBSCRIBE.iter().map(|t| (*t).to_owned()).collect(),
        config: Vec::new(),
        expiration: None,
    }
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
        let read = async {
            let row = platform.own_device(sim, &device_id).await?;
            let info = DeviceInfo {
                credentials: platform.credentials(sim, &device_id, &row, None)?,
                profile: row.profile.clone(),
                expiration: row.expiration.into(),
                served: u32::try_from(row.served).unwrap_or(u32::MAX),
                // Whole seconds, rounded down: "older than T" holds only once T has passed.
                password_age: u64::try_from((now_ms() - row.password_set_at) / 1000).unwrap_or(0),
            };
            Ok((row, info))
        }
        .await;
        Ok(read.map(|(row, info)| {
            // Only a count-based strategy decides on the count; otherwise answers for
            // the same password need not wait for each other.
            let count =
                matches!(row.expiration, Expiration::AfterXRequests(_)).then_some(row.served);
            self.seen.insert(
                device_id,
                Seen {
                    revision: row.revision,
                    count,
                    row: Some(row),
                },
            );
            info
        }))
    }

    async fn serve_credentials(
        &mut self,
        device_id: String,
        rotate: bool,
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        let sim = self.sim()?.clone();
        // The function decided on what `device` showed it (already checked to be this
        // SIM's); the claim holds only if the device is still that, else `conflict` and
        // it decides again.
        let remembered = self.seen.remove(&device_id);
        let (row, seen) = match remembered {
            Some(Seen {
                revision,
                count,
                row: Some(row),
            }) => (row, (revision, count)),
            remembered => match self.platform.own_device(&sim, &device_id).await {
                Ok(row) => {
                    let seen = remembered.map_or((row.revision, None), |s| (s.revision, s.count));
                    (row, seen)
                }
                Err(e) => return Ok(Err(e)),
            },
        };
        let fresh = if rotate {
            match fresh_password(&self.platform, &sim.account_id, &device_id) {
                Ok(fresh) => Some(fresh),
                Err(e) => return Ok(Err(e)),
            }
        } else {
            None
        };
        let credentials = match self.platform.credentials(
            &sim,
            &device_id,
            &row,
            fresh.as_ref().map(|(clear, _)| clear.as_str()),
        ) {
            Ok(credentials) => credentials,
            Err(e) => return Ok(Err(e)),
        };
        let rotate_to = fresh.as_ref().map(|(_, sealed)| {
            (
                sealed.as_slice(),
                PreviousPassword {
                    sealed_password: row.sealed_password.clone(),
                    password_set_at: row.password_set_at,
                    served: row.served,
                },
            )
        });
        let claimed = self
            .platform
            .store
            .claim_serve(&sim.account_id, &device_id, seen, rotate_to)
            .await;
        Ok(match claimed {
            Ok(Some(claim)) => {
                self.seen.insert(
                    device_id.clone(),
                    Seen {
                        revision: claim.revision,
                        count: seen.1.map(|_| claim.served),
                        row: None,
                    },
                );
                self.effects.push(Effect::Served {
                    account_id: sim.account_id.clone(),
                    device_id,
                    claim,
                });
                Ok(credentials)
            }
            Ok(None) => Err(CapError::Conflict),
            Err(e) => Err(unavailable(&e)),
        })
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
            let row = platform.own_device(sim, &device_id).await?;
            let Some(broker) = &platform.broker else {
                return Err(CapError::Unavailable);
            };
            // A device's first publish topic is its sensor topic (the profile's order).
            let topic = row.publish.first().ok_or(CapError::Invalid)?;
            broker
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

/// A device's new password in the clear (for the answer) and sealed (for the store).
pub(super) fn fresh_password(
    platform: &Platform,
    account_id: &str,
    device_id: &str,
) -> Result<(String, Vec<u8>), CapError> {
    platform
        .sealer
        .fresh_password(&password_context(account_id, device_id))
        .map_err(|e| unavailable(&e))
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
            let client_id = random_token(BROKER_NAME_LEN).map_err(|e| unavailable(&e))?;
            let username = random_token(BROKER_NAME_LEN).map_err(|e| unavailable(&e))?;
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
                    return Ok(Credentials {
                        client_id,
                        username,
                        password,
                    });
                }
                Err(CreateDeviceError::Exists) => return Err(CapError::Conflict),
                Err(CreateDeviceError::NameClash) => continue,
                Err(CreateDeviceError::Store(e)) => return Err(store_refusal(&e)),
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

    /// The answers reached the SIM: the passwords they replaced were revoked with the
    /// claim, and this node's broker hears of it now.
    pub fn commit(&self, effects: Vec<Effect>) {
        for Effect::Served {
            account_id,
            device_id,
            claim,
        } in effects
        {
            if claim.previous.is_some() {
                tracing::info!(account = &*account_id, device_id, "password rotated");
                self.revoked();
            }
        }
    }

    /// The answers never left: take their counts and rotations back.
    pub async fn undo(&self, effects: Vec<Effect>) {
        for Effect::Served {
            account_id,
            device_id,
            claim,
        } in effects
        {
            match self.store.undo_serve(&account_id, &device_id, &claim).await {
                Ok(true) if claim.previous.is_some() => self.revoked(),
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    account = &*account_id,
                    device_id,
                    "an answer that was not sent stays counted: the device changed since"
                ),
                Err(e) => tracing::error!(
                    account = &*account_id,
                    device_id,
                    "an answer that was not sent stays counted: {e}"
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

/// A quota refusal is `denied` (the WIT error has no room for a reason; the log names
/// the quota), anything else the store failing.
pub(super) fn store_refusal(e: &StoreError) -> CapError {
    match e {
        StoreError::Quota(quota) => {
            tracing::info!(quota = quota.name(), "write refused: quota reached");
            CapError::Denied
        }
        e => unavailable(e),
    }
}

impl CapabilityCtx {
    /// [`store_refusal`], keeping the quota for the admin port's answer.
    pub(super) fn store_refusal(&self, e: &StoreError) -> CapError {
        if let StoreError::Quota(quota) = e {
            let _ = self.quota.set(*quota);
        }
        store_refusal(e)
    }
}

pub(super) fn unavailable(e: &dyn std::fmt::Display) -> CapError {
    tracing::error!("registry: {e}");
    CapError::Unavailable
}
