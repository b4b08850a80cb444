//! `accounts-admin`: an account's expiration strategy, device profiles, device config, on-demand rotation.

use wire::identity::is_name;
use wire::topics::{MAX_TEMPLATES, valid_template};

use super::bindings::psk_edge::platform::accounts_admin::{App, Host, Profile};
use super::registry::{CLASH_RETRIES, fresh_password, unavailable};
use super::{Caller, CapError, CapabilityCtx, Credentials, WitExpiration};
use crate::secrets::{BROKER_NAME_LEN, app_password_context, random_token};
use crate::store::{CreateAppError, Expiration, ProfileRow};

const MAX_CONFIG: usize = 32;
/// A config value must leave room for the credentials in a 250-byte SIM answer.
const MAX_CONFIG_VALUE: usize = 200;

impl CapabilityCtx {
    /// Who may administer `account_id`: the operator any account, a tenant its own.
    fn admin(&self, account_id: &str) -> Result<(), CapError> {
        match &self.caller {
            _ if !is_name(account_id) => Err(CapError::Invalid),
            Caller::Operator => Ok(()),
            Caller::Tenant(own) if **own == *account_id => Ok(()),
            Caller::Tenant(_) | Caller::Sim(_) => Err(CapError::Denied),
        }
    }
}

fn valid_json(value: &str) -> bool {
    value.len() <= MAX_CONFIG_VALUE && serde_json::from_str::<serde_json::Value>(value).is_ok()
}

fn valid_profile(p: &Profile) -> bool {
    let topics_ok = |t: &[String]| t.len() <= MAX_TEMPLATES && t.iter().all(|t| valid_template(t));
    is_name(&p.name)
        && !p.publish.is_empty()
        && topics_ok(&p.publish)
        && topics_ok(&p.subscribe)
        && p.config.len() <= MAX_CONFIG
        && p.config
            .iter()
            .all(|(name, value)| is_name(name) && valid_json(value))
}

fn found(found: bool) -> Result<(), CapError> {
    if found {
        Ok(())
    } else {
        Err(CapError::NotFound)
    }
}

impl Host for CapabilityCtx {
    async fn set_expiration(
        &mut self,
        account_id: String,
        expiration: WitExpiration,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let expiration = Expiration::from(expiration);
            if matches!(
                expiration,
                Expiration::AfterXRequests(0) | Expiration::TimeBased(0)
            ) {
                return Err(CapError::Invalid);
            }
            let store = &self.platform.store;
            found(
                store
                    .set_account_expiration(&account_id, expiration)
                    .await
                    .map_err(|e| unavailable(&e))?,
            )?;
            tracing::info!(account = account_id, %expiration, "expiration strategy set");
            Ok(())
        }
        .await)
    }

    async fn get_expiration(
        &mut self,
        account_id: String,
    ) -> wasmtime::Result<Result<WitExpiration, CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let store = &self.platform.store;
            let expiration = store
                .account_expiration(&account_id)
                .await
                .map_err(|e| unavailable(&e))?;
            expiration.map(Into::into).ok_or(CapError::NotFound)
        }
        .await)
    }

    async fn put_profile(
        &mut self,
        account_id: String,
        profile: Profile,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            if !valid_profile(&profile) {
                return Err(CapError::Invalid);
            }
            let row = ProfileRow {
                name: profile.name,
                publish: profile.publish,
                subscribe: profile.subscribe,
                config: profile.config,
                expiration: profile.expiration.map(Into::into),
            };
            let store = &self.platform.store;
            found(
                store
                    .put_profile(&account_id, &row)
                    .await
                    .map_err(|e| self.store_refusal(&e))?,
            )?;
            tracing::info!(account = account_id, profile = row.name, "profile stored");
            Ok(())
        }
        .await)
    }

    async fn list_profiles(
        &mut self,
        account_id: String,
    ) -> wasmtime::Result<Result<Vec<Profile>, CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let store = &self.platform.store;
            if store
                .account_expiration(&account_id)
                .await
                .map_err(|e| unavailable(&e))?
                .is_none()
            {
                return Err(CapError::NotFound);
            }
            let rows = store
                .profiles(&account_id)
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(rows
                .into_iter()
                .map(|row| Profile {
                    name: row.name,
                    publish: row.publish,
                    subscribe: row.subscribe,
                    config: row.config,
                    expiration: row.expiration.map(Into::into),
                })
                .collect())
        }
        .await)
    }

    async fn set_config(
        &mut self,
        account_id: String,
        device_id: String,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            if !is_name(&device_id) || !is_name(&name) || !valid_json(&value) {
                return Err(CapError::Invalid);
            }
            let store = &self.platform.store;
            found(
                store
                    .set_config(&account_id, &device_id, &name, &value)
                    .await
                    .map_err(|e| self.store_refusal(&e))?,
            )?;
            tracing::info!(account = account_id, device_id, name, "config property set");
            Ok(())
        }
        .await)
    }

    async fn delete_config(
        &mut self,
        account_id: String,
        device_id: String,
        name: String,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let store = &self.platform.store;
            found(
                store
                    .delete_config(&account_id, &device_id, &name)
                    .await
                    .map_err(|e| unavailable(&e))?,
            )?;
            tracing::info!(
                account = account_id,
                device_id,
                name,
                "config property deleted"
            );
            Ok(())
        }
        .await)
    }

    async fn list_config(
        &mut self,
        account_id: String,
        device_id: String,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let store = &self.platform.store;
            store
                .list_config(&account_id, &device_id)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or(CapError::NotFound)
        }
        .await)
    }

    async fn rotate_password(
        &mut self,
        account_id: String,
        device_id: String,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let platform = &self.platform;
            // The clear password is not needed: the SIM gets one with its next request.
            let (_, sealed) = fresh_password(platform, &account_id, &device_id)?;
            // Not yet handed to the SIM: it gets the new password with its next request.
            let revision = platform
                .store
                .set_password(&account_id, &device_id, &sealed, 0)
                .await
                .map_err(|e| unavailable(&e))?;
            found(revision.is_some())?;
            tracing::info!(
                account = account_id,
                device_id,
                "password rotated on demand"
            );
            platform.revoked();
            Ok(())
        }
        .await)
    }

    async fn delete_device(
        &mut self,
        account_id: String,
        device_id: String,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            if !is_name(&device_id) {
                return Err(CapError::Invalid);
            }
            let platform = &self.platform;
            found(
                platform
                    .store
                    .delete_device(&account_id, &device_id)
                    .await
                    .map_err(|e| unavailable(&e))?,
            )?;
            tracing::info!(
                account = account_id,
                device_id,
                caller = self.caller.label(),
                "device deleted"
            );
            platform.revoked();
            Ok(())
        }
        .await)
    }

    async fn create_app(
        &mut self,
        account_id: String,
        name: String,
    ) -> wasmtime::Result<Result<Credentials, CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            if !is_name(&name) {
                return Err(CapError::Invalid);
            }
            let platform = &self.platform;
            for _ in 0..CLASH_RETRIES {
                let client_id = random_token(BROKER_NAME_LEN).map_err(|e| unavailable(&e))?;
                let username = random_token(BROKER_NAME_LEN).map_err(|e| unavailable(&e))?;
                let (password, sealed) = platform
                    .sealer
                    .fresh_password(&app_password_context(&account_id, &name))
                    .map_err(|e| unavailable(&e))?;
                match platform
                    .store
                    .create_app(&account_id, &name, &client_id, &username, &sealed)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(
                            account = account_id,
                            app = name,
                            caller = self.caller.label(),
                            "application credential created"
                        );
                        return Ok(Credentials {
                            client_id,
                            username,
                            password,
                        });
                    }
                    Err(CreateAppError::NameClash) => continue,
                    Err(CreateAppError::Exists) => return Err(CapError::Conflict),
                    Err(CreateAppError::NoAccount) => return Err(CapError::NotFound),
                    Err(CreateAppError::Store(e)) => return Err(unavailable(&e)),
                }
            }
            tracing::error!(
                account = account_id,
                "could not find a free broker client id for an application"
            );
            Err(CapError::Unavailable)
        }
        .await)
    }

    async fn list_apps(
        &mut self,
        account_id: String,
    ) -> wasmtime::Result<Result<Vec<App>, CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            let apps = self
                .platform
                .store
                .list_apps(&account_id)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or(CapError::NotFound)?;
            Ok(apps
                .into_iter()
                .map(|app| App {
                    name: app.name,
                    created_at: u64::try_from(app.created_at).unwrap_or(0),
                })
                .collect())
        }
        .await)
    }

    async fn delete_app(
        &mut self,
        account_id: String,
        name: String,
    ) -> wasmtime::Result<Result<(), CapError>> {
        Ok(async {
            self.admin(&account_id)?;
            if !is_name(&name) {
                return Err(CapError::Invalid);
            }
            let platform = &self.platform;
            found(
                platform
                    .store
                    .delete_app(&account_id, &name)
                    .await
                    .map_err(|e| unavailable(&e))?,
            )?;
            tracing::info!(
                account = account_id,
                app = name,
                caller = self.caller.label(),
                "application credential deleted"
            );
            platform.revoked();
            Ok(())
        }
        .await)
    }
}
