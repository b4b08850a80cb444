//! The C boundary: bindings generated from the installed Mosquitto 2.0.11 headers, the few
//! constants those headers leave to `mosquitto.h`, and the only functions that call into
//! the broker.
//!
//! Unit tests link no broker, so under `cfg(test)` the calls into it are replaced by
//! stand-ins that record what they were asked (see [`test_broker`]).

use std::ffi::{CStr, CString, c_char, c_int, c_void};

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unnecessary_transmutes,
    clippy::all
)]
pub(crate) mod sys {
    include!(concat!(env!("OUT_DIR"), "/mosquitto.rs"));
}

pub(crate) use sys::{
    MOSQ_FUNC_generic_callback, mosquitto, mosquitto_evt_acl_check, mosquitto_evt_basic_auth,
    mosquitto_evt_control, mosquitto_evt_disconnect, mosquitto_opt, mosquitto_plugin_id_t,
};

// `mosquitto_broker.h` and `mosquitto_plugin.h` return these but define them in
// `mosquitto.h` (libmosquitto-dev, not needed otherwise). Values from `enum mosq_err_t`
// and the `MOSQ_LOG_*` defines of 2.0.11; they have not changed since 1.x.
pub(crate) const MOSQ_ERR_SUCCESS: c_int = 0;
pub(crate) const MOSQ_ERR_INVAL: c_int = 3;
pub(crate) const MOSQ_ERR_AUTH: c_int = 11;
pub(crate) const MOSQ_ERR_ACL_DENIED: c_int = 12;
pub(crate) const MOSQ_ERR_UNKNOWN: c_int = 13;

pub(crate) const PLUGIN_VERSION: c_int = sys::MOSQ_PLUGIN_VERSION as c_int;

pub(crate) const ACL_READ: c_int = sys::MOSQ_ACL_READ as c_int;
pub(crate) const ACL_WRITE: c_int = sys::MOSQ_ACL_WRITE as c_int;
pub(crate) const ACL_SUBSCRIBE: c_int = sys::MOSQ_ACL_SUBSCRIBE as c_int;
pub(crate) const ACL_UNSUBSCRIBE: c_int = sys::MOSQ_ACL_UNSUBSCRIBE as c_int;

pub(crate) const EVT_ACL_CHECK: c_int = sys::MOSQ_EVT_ACL_CHECK as c_int;
pub(crate) const EVT_BASIC_AUTH: c_int = sys::MOSQ_EVT_BASIC_AUTH as c_int;
pub(crate) const EVT_CONTROL: c_int = sys::MOSQ_EVT_CONTROL as c_int;
pub(crate) const EVT_TICK: c_int = sys::MOSQ_EVT_TICK as c_int;
pub(crate) const EVT_DISCONNECT: c_int = sys::MOSQ_EVT_DISCONNECT as c_int;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Info = 0x01,
    Notice = 0x02,
    Warning = 0x04,
    Error = 0x08,
    Debug = 0x10,
}

/// A log line through the broker's own logging. Callers must not hold the plugin state
/// while logging: with `log_dest topic` the broker publishes the line at once, which runs
/// ACL checks, which come back into the plugin.
pub(crate) fn log(level: Level, message: &str) {
    let line = format!("psk-edge: {message}");
    // A NUL would cut the line short; none of ours carries one, client-supplied text is
    // escaped before it gets here, but never let that turn into a lost line.
    let line = CString::new(line.replace('\0', "\\0")).unwrap_or_default();
    imp::log(level as c_int, &line);
}

/// The client's id, as the broker holds it.
///
/// # Safety
/// `client` is a client pointer the broker passed to the running callback.
pub(crate) unsafe fn client_id<'a>(client: *const mosquitto) -> Option<&'a CStr> {
    // SAFETY: the caller hands us a live client; the broker keeps its strings alive for
    // at least the callback, which outlives every use of the result.
    unsafe { cstr(imp::client_id(client)) }
}

/// The client's username, as the broker holds it.
///
/// # Safety
/// As [`client_id`].
pub(crate) unsafe fn client_username<'a>(client: *const mosquitto) -> Option<&'a CStr> {
    // SAFETY: as in `client_id`.
    unsafe { cstr(imp::client_username(client)) }
}

/// Disconnects every session logged in as `username`. Runs the broker's disconnect path
/// (and our DISCONNECT callback) before it returns.
pub(crate) fn kick_by_username(username: &str) {
    if let Ok(username) = CString::new(username) {
        imp::kick_client_by_username(&username);
    }
}

/// # Safety
/// `identifier` is the one the broker gave `mosquitto_plugin_init`; `event_data` is NULL
/// or, for `MOSQ_EVT_CONTROL`, a NUL-terminated topic; `userdata` stays valid until the
/// callback is unregistered.
pub(crate) unsafe fn callback_register(
    identifier: *mut mosquitto_plugin_id_t,
    event: c_int,
    callback: MOSQ_FUNC_generic_callback,
    event_data: *const c_void,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: forwarded under the caller's guarantees.
    unsafe { imp::callback_register(identifier, event, callback, event_data, userdata) }
}

/// # Safety
/// As [`callback_register`], with the same `event_data` as at registration.
pub(crate) unsafe fn callback_unregister(
    identifier: *mut mosquitto_plugin_id_t,
    event: c_int,
    callback: MOSQ_FUNC_generic_callback,
    event_data: *const c_void,
) -> c_int {
    // SAFETY: forwarded under the caller's guarantees.
    unsafe { imp::callback_unregister(identifier, event, callback, event_data) }
}

/// # Safety
/// `ptr` is NULL or a NUL-terminated string alive for `'a`.
pub(crate) unsafe fn cstr<'a>(ptr: *const c_char) -> Option<&'a CStr> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated per the caller.
        Some(unsafe { CStr::from_ptr(ptr) })
    }
}

#[cfg(not(test))]
mod imp {
    use super::*;

    pub(super) fn log(level: c_int, line: &CStr) {
        // SAFETY: a fixed "%s" format with one NUL-terminated argument; the broker copies
        // the text before returning.
        unsafe { sys::mosquitto_log_printf(level, c"%s".as_ptr(), line.as_ptr()) }
    }

    pub(super) fn client_id(client: *const mosquitto) -> *const c_char {
        // SAFETY: the broker reads one field of a client it passed us; it handles NULL.
        unsafe { sys::mosquitto_client_id(client) }
    }

    pub(super) fn client_username(client: *const mosquitto) -> *const c_char {
        // SAFETY: as in `client_id`.
        unsafe { sys::mosquitto_client_username(client) }
    }

    pub(super) fn kick_client_by_username(username: &CStr) {
        // SAFETY: a NUL-terminated string the broker only compares against; we are on the
        // broker's thread, inside one of its callbacks, where plugin calls are allowed.
        unsafe {
            sys::mosquitto_kick_client_by_username(username.as_ptr(), false);
        }
    }

    pub(super) unsafe fn callback_register(
        identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        callback: MOSQ_FUNC_generic_callback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int {
        // SAFETY: forwarded under the caller's guarantees (see `super::callback_register`).
        unsafe {
            sys::mosquitto_callback_register(identifier, event, callback, event_data, userdata)
        }
    }

    pub(super) unsafe fn callback_unregister(
        identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        callback: MOSQ_FUNC_generic_callback,
        event_data: *const c_void,
    ) -> c_int {
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { sys::mosquitto_callback_unregister(identifier, event, callback, event_data) }
    }
}

#[cfg(test)]
use test_broker as imp;

/// Stand-ins for the broker in unit tests. A "client" pointer is a `*const TestClient`.
#[cfg(test)]
pub(crate) mod test_broker {
    use super::*;
    use std::cell::RefCell;

    pub(crate) struct TestClient {
        pub id: Option<CString>,
        pub username: Option<CString>,
    }

    impl TestClient {
        pub(crate) fn new(id: &str, username: &str) -> Box<TestClient> {
            Box::new(TestClient {
                id: Some(CString::new(id).unwrap()),
                username: Some(CString::new(username).unwrap()),
            })
        }

        pub(crate) fn ptr(&self) -> *mut mosquitto {
            self as *const TestClient as *mut mosquitto
        }
    }

    thread_local! {
        pub(crate) static LOGS: RefCell<Vec<(c_int, String)>> = const { RefCell::new(Vec::new()) };
        pub(crate) static KICKS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        pub(crate) static REGISTERED: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn take_logs() -> Vec<(c_int, String)> {
        LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
    }

    pub(crate) fn take_kicks() -> Vec<String> {
        KICKS.with(|kicks| std::mem::take(&mut *kicks.borrow_mut()))
    }

    pub(super) fn log(level: c_int, line: &CStr) {
        LOGS.with(|logs| {
            logs.borrow_mut()
                .push((level, line.to_string_lossy().into_owned()))
        });
    }

    pub(super) fn client_id(client: *const mosquitto) -> *const c_char {
        // SAFETY: tests only pass pointers made by `TestClient::ptr`.
        let client = unsafe { &*(client as *const TestClient) };
        client
            .id
            .as_ref()
            .map_or(std::ptr::null(), |id| id.as_ptr())
    }

    pub(super) fn client_username(client: *const mosquitto) -> *const c_char {
        // SAFETY: as in `client_id`.
        let client = unsafe { &*(client as *const TestClient) };
        client
            .username
            .as_ref()
            .map_or(std::ptr::null(), |name| name.as_ptr())
    }

    pub(super) fn kick_client_by_username(username: &CStr) {
        KICKS.with(|kicks| {
            kicks
                .borrow_mut()
                .push(username.to_string_lossy().into_owned())
        });
    }

    pub(super) unsafe fn callback_register(
        _identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        _callback: MOSQ_FUNC_generic_callback,
        _event_data: *const c_void,
        _userdata: *mut c_void,
    ) -> c_int {
        REGISTERED.with(|events| events.borrow_mut().push(event));
        MOSQ_ERR_SUCCESS
    }

    pub(super) unsafe fn callback_unregister(
        _identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        _callback: MOSQ_FUNC_generic_callback,
        _event_data: *const c_void,
    ) -> c_int {
        REGISTERED.with(|events| events.borrow_mut().retain(|&e| e != event));
        MOSQ_ERR_SUCCESS
    }
}
