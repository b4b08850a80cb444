//! `registry`: devices of the authenticated SIM's account and their MQTT credentials.

use super::bindings::psk_edge::platform::registry::{Host, Sim};
use super::{CapError, CapabilityCtx, Credentials, Platform, SimCaller};
use crate::identity::is_name;
use crate::secrets::random_token;
use crate::store::{CreateDeviceError, NewDevice};

/// `cli` and `usr` are at most 24 characters on the wire; 20 random characters
/// (~119 bits) make a broker-wide clash practically impossible, and the store's
/// unique constraints catch one anyway.
const NAME_LEN: usize = 20;
const PASSWORD_LEN: usize = 24;
const CLASH_RETRIES: usize = 3;

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
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        let sim = self.sim()?;
        if !is_name(&device_id) {
            return Ok(Err(CapError::Invalid));
        }
        Ok(self.platform.create_device(sim, &device_id).await)
    }

    async fn device_credentials(
        &mut self,
        device_id: String,
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        let sim = self.sim()?;
        if !is_name(&device_id) {
            return Ok(Err(CapError::Invalid));
        }
        Ok(self.platform.device_credentials(sim, &device_id).await)
    }
}

fn password_context(account_id: &str, device_id: &str) -> Vec<u8> {
    format!("pwd:{account_id}/{device_id}").into_bytes()
}

impl Platform {
    async fn create_device(
        &self,
        sim: &SimCaller,
        device_id: &str,
    ) -> Result<Credentials, CapError> {
        for _ in 0..CLASH_RETRIES {
            let creds = fresh_credentials().map_err(|e| unavailable(&e))?;
            let sealed = self
                .sealer
                .seal(
                    &password_context(&sim.account_id, device_id),
                    creds.password.as_bytes(),
                )
                .map_err(|e| unavailable(&e))?;
            let device = NewDevice {
                account_id: &sim.account_id,
                device_id,
                iccid: &sim.iccid,
                client_id: &creds.client_id,
                username: &creds.username,
                sealed_password: &sealed,
            };
            match self.store.create_device(&device).await {
                Ok(()) => {
                    tracing::info!(
                        account = &*sim.account_id,
                        device_id,
                        iccid = sim.iccid,
                        "device created"
                    );
                    return Ok(creds);
                }
                Err(CreateDeviceError::Exists) => return Err(CapError::Conflict),
                Err(CreateDeviceError::NameClash) => continue,
                Err(CreateDeviceError::Store(e)) => return Err(unavailable(&e)),
            }
        }
        tracing::error!(device_id, "could not find a free broker client id");
        Err(CapError::Unavailable)
    }

    async fn device_credentials(
        &self,
        sim: &SimCaller,
        device_id: &str,
    ) -> Result<Credentials, CapError> {
        let row = self
            .store
            .device(&sim.account_id, device_id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or(CapError::NotFound)?;
        if row.iccid != sim.iccid {
            return Err(CapError::Foreign);
        }
        let password = self
            .sealer
            .open(
                &password_context(&sim.account_id, device_id),
                &row.sealed_password,
            )
            .map_err(|e| unavailable(&e))?;
        let password = String::from_utf8(password.to_vec()).map_err(|_| CapError::Unavailable)?;
        Ok(Credentials {
            client_id: row.client_id,
            username: row.username,
            password,
        })
    }
}

fn fresh_credentials() -> anyhow::Result<Credentials> {
    Ok(Credentials {
        client_id: random_token(NAME_LEN)?,
        username: random_token(NAME_LEN)?,
        password: random_token(PASSWORD_LEN)?,
    })
}

fn unavailable(e: &dyn std::fmt::Display) -> CapError {
    tracing::error!("registry: {e}");
    CapError::Unavailable
}
