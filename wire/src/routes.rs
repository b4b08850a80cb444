//! The route table: which component serves which method and path on which listener, read from a Spin v2 manifest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    Sim,
    Admin,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    spin_manifest_version: u32,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: HashMap<String, ComponentSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct Triggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct HttpTrigger {
    route: String,
    component: String,
    listener: Listener,
    #[serde(default)]
    methods: Vec<String>,
    ndjson_batch: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ComponentSpec {
    source: String,
}

/// A component of the manifest and where its bytes come from.
#[derive(Debug, Clone)]
pub struct ComponentSource {
    pub id: String,
    /// The `source` path as written, resolved against the manifest's directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub listener: Listener,
    segments: Vec<Segment>,
    /// Upper-case methods; empty means any.
    methods: Vec<String>,
    pub component: String,
    pub ndjson_batch: Option<usize>,
}

#[derive(Debug, Clone)]
enum Segment {
    Exact(String),
    Param(String),
}

/// A matched route with the values of its `:name` segments.
pub struct Matched<'a> {
    pub route: &'a Route,
    pub params: Vec<(&'a str, &'a str)>,
}

impl Matched<'_> {
    /// Replaces every `spin-*` header of `headers` with the host's own for this route.
    /// The host alone speaks in that namespace: a client's `spin-path-match-device-id`
    /// left beside the host's would be the first value a component reads.
    pub fn set_spin_headers(&self, headers: &mut http::HeaderMap) {
        strip_spin_headers(headers);
        for (name, value) in self.spin_headers() {
            headers.insert(name, value);
        }
    }

    /// The `:name` values as Spin passes them to a component: `spin-path-match-name`.
    pub fn spin_headers(&self) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> + '_ {
        self.params.iter().filter_map(|(name, value)| {
            let name =
                http::HeaderName::try_from(format!("spin-path-match-{}", name.replace('_', "-")))
                    .ok()?;
            Some((name, http::HeaderValue::from_str(value).ok()?))
        })
    }
}

/// Removes every header in the namespace the host sets for components (`spin-*`).
pub fn strip_spin_headers(headers: &mut http::HeaderMap) {
    // Header names are stored lower-case, so one prefix test covers any spelling.
    let client_set: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in client_set {
        headers.remove(name);
    }
}

pub enum Lookup<'a> {
    Found(Matched<'a>),
    /// The path exists on this listener, but not for this method.
    MethodNotAllowed,
    NotFound,
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    pub components: Vec<ComponentSource>,
}

impl RouteTable {
    /// Parses a manifest; `base` is the directory its relative sources resolve against.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let manifest: Manifest = toml::from_str(text).context("parsing the Spin manifest")?;
        if manifest.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        let mut components: Vec<ComponentSource> = manifest
            .component
            .iter()
            .map(|(id, spec)| ComponentSource {
                id: id.clone(),
                path: base.join(&spec.source),
            })
            .collect();
        components.sort_by(|a, b| a.id.cmp(&b.id));
        let mut routes = Vec::new();
        for trigger in manifest.trigger.http {
            if !manifest.component.contains_key(&trigger.component) {
                bail!(
                    "route {} names unknown component {}",
                    trigger.route,
                    trigger.component
                );
            }
            if trigger.ndjson_batch == Some(0) {
                bail!("route {}: ndjson_batch must be at least 1", trigger.route);
            }
            // A component is linked against one WIT world, the one of its port.
            if let Some(other) = routes.iter().find(|r: &&Route| {
                r.component == trigger.component && r.listener != trigger.listener
            }) {
                bail!(
                    "component {} serves routes on both ports ({:?} and {:?}); a component serves one",
                    trigger.component,
                    other.listener,
                    trigger.listener
                );
            }
            routes.push(Route {
                listener: trigger.listener,
                segments: parse_route(&trigger.route)?,
                methods: trigger
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                component: trigger.component,
                ndjson_batch: trigger.ndjson_batch,
            });
        }
        Ok(RouteTable { routes, components })
    }

    /// The port a component's routes are on; None for a component without routes.
    pub fn listener_of(&self, component: &str) -> Option<Listener> {
        self.routes
            .iter()
            .find(|r| r.component == component)
            .map(|r| r.listener)
    }

    /// The components that serve routes of `listener`, each once.
    pub fn components_on(&self, listener: Listener) -> Vec<String> {
        let mut ids: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.listener == listener)
            .map(|r| r.component.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    pub fn lookup<'a>(&'a self, listener: Listener, method: &str, path: &'a str) -> Lookup<'a> {
        let mut path_matched = false;
        for route in self.routes.iter().filter(|r| r.listener == listener) {
            let Some(params) = match_path(&route.segments, path) else {
                continue;
            };
            if route.methods.is_empty() || route.methods.iter().any(|m| m == method) {
                return Lookup::Found(Matched { route, params });
            }
            path_matched = true;
        }
        if path_matched {
            Lookup::MethodNotAllowed
        } else {
            Lookup::NotFound
        }
    }
}

fn parse_route(route: &str) -> anyhow::Result<Vec<Segment>> {
    let Some(rest) = route.strip_prefix('/') else {
        bail!("route {route} must start with /");
    };
    rest.split('/')
        .map(|seg| match seg.strip_prefix(':') {
            Some("") => bail!("route {route} has an unnamed parameter"),
            Some(name) => Ok(Segment::Param(name.to_owned())),
            None if seg.contains("...") => {
                bail!("route {route}: wildcard routes are not supported")
            }
            None => Ok(Segment::Exact(seg.to_owned())),
        })
        .collect()
}

fn match_path<'a>(segments: &'a [Segment], path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
    let rest = path.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (segment, part) in segments.iter().zip(parts) {
        match segment {
            Segment::Exact(s) if s == part => {}
            Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
            _ => return None,
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::parse(include_str!("../../spin.toml"), Path::new("/m")).unwrap()
    }

    #[test]
    fn the_host_alone_sets_spin_headers() {
        let t = table();
        let Lookup::Found(m) = t.lookup(Listener::Sim, "GET", "/v1/dev/real") else {
            panic!("no route")
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("Spin-Path-Match-Device-Id", "forged"),
            ("spin-path-match-device-id", "forged-too"),
            ("spin-full-url", "http://elsewhere/"),
            ("host", "x"),
        ] {
            headers.append(
                http::HeaderName::try_from(name).unwrap(),
                http::HeaderValue::from_static(value),
            );
        }
        m.set_spin_headers(&mut headers);
        let values: Vec<_> = headers
            .get_all("spin-path-match-device-id")
            .iter()
            .collect();
        assert_eq!(values, ["real"]);
        assert!(!headers.contains_key("spin-full-url"));
        assert_eq!(headers["host"], "x");
    }

    #[test]
    fn routes_are_per_listener_and_method() {
        let t = table();
        let Lookup::Found(m) = t.lookup(Listener::Sim, "POST", "/v1/dev/d-1") else {
            panic!("no route")
        };
        assert_eq!(m.route.component, "device-create");
        assert_eq!(m.params, vec![("device_id", "d-1")]);
        let headers: Vec<_> = m.spin_headers().collect();
        assert_eq!(headers.len(), 1);
        assert_eq!(
            (headers[0].0.as_str(), headers[0].1.to_str().unwrap()),
            ("spin-path-match-device-id", "d-1")
        );
        let Lookup::Found(m) = t.lookup(Listener::Sim, "GET", "/v1/dev/d-1") else {
            panic!("no route")
        };
        assert_eq!(m.route.component, "device-credentials");
        assert!(matches!(
            t.lookup(Listener::Sim, "DELETE", "/v1/dev/d"),
            Lookup::MethodNotAllowed
        ));
        assert!(matches!(
            t.lookup(Listener::Sim, "POST", "/v3/sys/security/psk"),
            Lookup::NotFound
        ));
        assert!(matches!(
            t.lookup(Listener::Admin, "POST", "/v1/dev/d"),
            Lookup::NotFound
        ));
        assert!(matches!(
            t.lookup(Listener::Sim, "GET", "/v1/dev/"),
            Lookup::NotFound
        ));
        assert!(matches!(
            t.lookup(Listener::Sim, "GET", "/v1/dev/a/b"),
            Lookup::NotFound
        ));
        let Lookup::Found(m) = t.lookup(Listener::Admin, "POST", "/v3/sys/security/psk/bulk")
        else {
            panic!("no route")
        };
        assert_eq!(m.route.ndjson_batch, Some(1000));
    }

    #[test]
    fn sources_resolve_against_the_manifest() {
        let t = table();
        let c = t.components.iter().find(|c| c.id == "admin-psk").unwrap();
        assert!(c.path.starts_with("/m/functions"));
    }

    #[test]
    fn bad_manifests_are_refused() {
        let bad = "spin_manifest_version = 2\n[[trigger.http]]\nroute = \"/x\"\ncomponent = \"nope\"\nlistener = \"sim\"\n";
        assert!(RouteTable::parse(bad, Path::new("/")).is_err());
        assert!(RouteTable::parse("spin_manifest_version = 1", Path::new("/")).is_err());
        let both = "spin_manifest_version = 2\n[component.c]\nsource = \"c.wasm\"\n\
            [[trigger.http]]\nroute = \"/a\"\ncomponent = \"c\"\nlistener = \"sim\"\n\
            [[trigger.http]]\nroute = \"/b\"\ncomponent = \"c\"\nlistener = \"admin\"\n";
        let err = RouteTable::parse(both, Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("both ports"), "{err}");
        let t = table();
        assert_eq!(t.listener_of("admin-psk"), Some(Listener::Admin));
        assert_eq!(t.listener_of("device-create"), Some(Listener::Sim));
        assert_eq!(t.listener_of("nothing"), None);
    }
}
