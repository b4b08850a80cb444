//! The platform's own components, built by build.rs and embedded in the binary.

use std::fmt;

/// One of the platform's components as compiled into the binary.
pub struct Embedded {
    /// Its id in spin.toml, e.g. `device-create`.
    pub name: &'static str,
    /// The file cargo names it, e.g. `device_create.wasm`: what a spin.toml `source` ends with.
    pub file_name: &'static str,
    /// The component binary.
    pub bytes: &'static [u8],
}

// By hand: the derived form would print every byte of the component.
impl fmt::Debug for Embedded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedded")
            .field("name", &self.name)
            .field("file_name", &self.file_name)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The embedded component whose file is named `file_name` (a spin.toml `source` whose
/// file does not exist beside the manifest is looked up here by its file name).
pub fn by_file_name(file_name: &str) -> Option<&'static Embedded> {
    PLATFORM.iter().find(|c| c.file_name == file_name)
}

/// The spin.toml the binary serves when no `--manifest` is given.
pub const DEFAULT_MANIFEST: &str = include_str!("../../spin.toml");

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `\0asm`, then the component-model version (0x0d) and layer (1).
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_embedded_file_is_a_component() {
        assert!(!PLATFORM.is_empty());
        for c in PLATFORM {
            assert!(
                c.bytes.starts_with(&COMPONENT_HEADER),
                "{} is not a component (header {:02x?})",
                c.file_name,
                &c.bytes[..c.bytes.len().min(8)]
            );
            assert_eq!(format!("{}.wasm", c.name.replace('-', "_")), c.file_name);
            assert!(std::ptr::eq(by_file_name(c.file_name).expect("found"), c));
        }
        assert!(by_file_name("missing.wasm").is_none());
    }

    #[test]
    fn the_default_manifest_names_only_embedded_components() {
        let manifest: toml::Table = toml::from_str(DEFAULT_MANIFEST).expect("spin.toml parses");
        let components = manifest
            .get("component")
            .and_then(|c| c.as_table())
            .expect("spin.toml has [component.*]");
        assert!(!components.is_empty());
        for (id, component) in components {
            let source = component
                .get("source")
                .and_then(|s| s.as_str())
                .unwrap_or_else(|| panic!("component {id} has a string source"));
            let file_name = Path::new(source)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_else(|| panic!("component {id}: source {source} names a file"));
            let embedded = by_file_name(file_name)
                .unwrap_or_else(|| panic!("component {id}: {file_name} is not embedded"));
            assert_eq!(embedded.name, id.as_str());
        }
    }
}
