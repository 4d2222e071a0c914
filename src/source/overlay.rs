//! Two trees read as one: the settings from a trusted tree, the declarations from another.

use crate::spec::{FileError, RepoFiles, SETTINGS_FILE};

/// Serves [`SETTINGS_FILE`] (`rackform.yaml`) from `settings` and every other path from
/// `rest`: what `rackform plan --ref HEAD --base BASE` reads, with `settings` the base
/// branch's tree and `rest` the head's.
///
/// [`crate::spec::load`] reads the settings first and then the cluster files of the
/// clusters directory the settings name, so the base decides the Packet project, prune
/// policy, delete guard, defaults, age recipients and where clusters live; the head
/// contributes only cluster files in that directory. A head that edits `rackform.yaml` changes
/// nothing this reads.
#[derive(Debug, Clone, Copy)]
pub struct SettingsOverlay<'a, S, R> {
    pub settings: &'a S,
    pub rest: &'a R,
}

impl<S: RepoFiles, R: RepoFiles> RepoFiles for SettingsOverlay<'_, S, R> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        if path == SETTINGS_FILE {
            self.settings.read(path)
        } else {
            self.rest.read(path)
        }
    }

    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        self.rest.list_yaml(dir)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Mem(BTreeMap<&'static str, &'static str>);

    impl RepoFiles for Mem {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
            Ok(self.0.get(path).map(|text| text.as_bytes().to_vec()))
        }
        fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
            Ok(self
                .0
                .keys()
                .filter(|p| p.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
                .map(|p| p.to_string())
                .collect())
        }
    }

    #[test]
    fn settings_come_from_one_tree_and_the_rest_from_the_other() {
        let base = Mem(BTreeMap::from([
            (SETTINGS_FILE, "base settings"),
            ("clusters/a.yaml", "base a"),
        ]));
        let head = Mem(BTreeMap::from([
            (SETTINGS_FILE, "head settings"),
            ("clusters/b.yaml", "head b"),
        ]));
        let overlay = SettingsOverlay {
            settings: &base,
            rest: &head,
        };
        let read = |path| overlay.read(path).unwrap().map(String::from_utf8);
        assert_eq!(read(SETTINGS_FILE), Some(Ok("base settings".into())));
        assert_eq!(read("clusters/b.yaml"), Some(Ok("head b".into())));
        assert_eq!(read("clusters/a.yaml"), None);
        assert_eq!(overlay.list_yaml("clusters").unwrap(), ["clusters/b.yaml"]);
    }
}
