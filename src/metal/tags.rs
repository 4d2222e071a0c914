//! rackform's device tags, parsed once here and nowhere else.
//!
//! A device belongs to a cluster through four tags: `rackform:cluster=<name>`,
//! `rackform:pool=<pool|control-plane>`, `rackform:ordinal=<n>` and
//! `rackform:spec=<short hash>`. [`DeviceTags::parse`] turns a device's tag list into
//! [`DeviceTags`]: unmanaged (no `rackform:` tag), managed, or malformed (a `rackform:` tag
//! is present but the set is incomplete or contradictory; what could be read is kept, so
//! such a device still shows under its cluster). Malformed is never "absent".

use std::fmt;

/// Prefix of every tag rackform writes.
pub const PREFIX: &str = "rackform:";
const CLUSTER: &str = "cluster";
const POOL: &str = "pool";
const ORDINAL: &str = "ordinal";
const SPEC: &str = "spec";
/// The tag that records a cluster's deletion protection on its devices, where no commit can
/// remove it: a protected cluster whose file and status file are both deleted is still not
/// pruned. Only a declaration with `deletionProtection: false`, applied, takes it off.
pub const PROTECTED: &str = "rackform:protected";
/// The pool name that marks control-plane nodes.
pub const CONTROL_PLANE: &str = "control-plane";
/// The API's limit on a tag's length (CAPP README).
pub const MAX_TAG_LEN: usize = 80;

/// The pool a device serves in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    ControlPlane,
    Worker(String),
}

impl Pool {
    /// Parses a pool tag value; `control-plane` is the control plane.
    pub fn parse(value: &str) -> Self {
        if value == CONTROL_PLANE {
            Self::ControlPlane
        } else {
            Self::Worker(value.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::ControlPlane => CONTROL_PLANE,
            Self::Worker(name) => name,
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity rackform gives a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RackformTags {
    pub cluster: String,
    pub pool: Pool,
    pub ordinal: u32,
    /// Short hash of the node template the device was created from.
    pub spec: String,
}

impl RackformTags {
    /// The tag strings to put on a new device, in a fixed order.
    pub fn to_tags(&self) -> Vec<String> {
        vec![
            cluster_tag(&self.cluster),
            format!("{PREFIX}{POOL}={}", self.pool),
            format!("{PREFIX}{ORDINAL}={}", self.ordinal),
            format!("{PREFIX}{SPEC}={}", self.spec),
        ]
    }

    /// Hostname rackform gives the device: `<cluster>-<pool>-<n>`.
    pub fn hostname(&self) -> String {
        format!("{}-{}-{}", self.cluster, self.pool, self.ordinal)
    }
}

/// The tag that marks every device of `cluster`, used to filter device lists.
pub fn cluster_tag(cluster: &str) -> String {
    format!("{PREFIX}{CLUSTER}={cluster}")
}

/// What a device's tags say about its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTags {
    /// No `rackform:` tag: not rackform's device.
    Unmanaged,
    Managed(RackformTags),
    /// Some `rackform:` tags, but not a usable set. Needs a human; never deleted.
    Malformed {
        /// What could be read (the first value of each key).
        partial: PartialTags,
        error: TagError,
    },
}

/// The readable part of a malformed tag set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialTags {
    pub cluster: Option<String>,
    pub pool: Option<Pool>,
    pub ordinal: Option<u32>,
    pub spec: Option<String>,
}

/// Why a device's `rackform:` tags are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag {PREFIX}{key}=... is missing")]
    Missing { key: &'static str },
    #[error("tag {PREFIX}{key} has two values, {first:?} and {second:?}")]
    Conflicting {
        key: &'static str,
        first: String,
        second: String,
    },
    #[error("tag {PREFIX}{key} is empty")]
    Empty { key: &'static str },
    #[error("tag {PREFIX}ordinal={value} is not a number")]
    BadOrdinal { value: String },
}

impl DeviceTags {
    /// Parses a device's tags. Tags without the `rackform:` prefix and unknown
    /// `rackform:` keys are ignored.
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> Self {
        let keys = [CLUSTER, POOL, ORDINAL, SPEC];
        let mut found: [Option<&str>; 4] = [None; 4];
        let mut any = false;
        let mut conflict = None;
        for tag in tags {
            let Some(rest) = tag.as_ref().strip_prefix(PREFIX) else {
                continue;
            };
            any = true;
            let Some((key, value)) = rest.split_once('=') else {
                continue;
            };
            let Some(slot) = keys.iter().position(|k| *k == key) else {
                continue;
            };
            match found[slot] {
                Some(first) if first != value => {
                    conflict.get_or_insert(TagError::Conflicting {
                        key: keys[slot],
                        first: first.to_owned(),
                        second: value.to_owned(),
                    });
                }
                _ => found[slot] = Some(value),
            }
        }
        if !any {
            return Self::Unmanaged;
        }
        let [cluster, pool, ordinal, spec] = found.map(|v| v.filter(|v| !v.is_empty()));
        let partial = PartialTags {
            cluster: cluster.map(str::to_owned),
            pool: pool.map(Pool::parse),
            ordinal: ordinal.and_then(|o| o.parse().ok()),
            spec: spec.map(str::to_owned),
        };
        let error = conflict.or_else(|| {
            keys.iter().zip(found).find_map(|(key, value)| match value {
                None => Some(TagError::Missing { key }),
                Some("") => Some(TagError::Empty { key }),
                Some(_) => None,
            })
        });
        let error = error.or_else(|| {
            partial.ordinal.is_none().then(|| TagError::BadOrdinal {
                value: ordinal.unwrap_or_default().to_owned(),
            })
        });
        match (error, partial) {
            (
                None,
                PartialTags {
                    cluster: Some(cluster),
                    pool: Some(pool),
                    ordinal: Some(ordinal),
                    spec: Some(spec),
                },
            ) => Self::Managed(RackformTags {
                cluster,
                pool,
                ordinal,
                spec,
            }),
            (error, partial) => Self::Malformed {
                error: error.expect("a complete, consistent set is managed"),
                partial,
            },
        }
    }

    /// The cluster the device says it belongs to, even when its tags are malformed.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Self::Unmanaged => None,
            Self::Managed(tags) => Some(&tags.cluster),
            Self::Malformed { partial, .. } => partial.cluster.as_deref(),
        }
    }

    /// The identity, when the tags form a usable set.
    pub fn managed(&self) -> Option<&RackformTags> {
        match self {
            Self::Managed(tags) => Some(tags),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(cluster: &str, pool: Pool, ordinal: u32) -> RackformTags {
        RackformTags {
            cluster: cluster.into(),
            pool,
            ordinal,
            spec: "a1b2c3d4".into(),
        }
    }

    #[test]
    fn round_trip() {
        for pool in [Pool::ControlPlane, Pool::Worker("gpu".into())] {
            let want = tags("edge", pool, 3);
            let mut written = want.to_tags();
            written.push("team=infra".into());
            written.reverse();
            assert_eq!(DeviceTags::parse(&written), DeviceTags::Managed(want));
        }
        assert_eq!(
            tags("edge", Pool::ControlPlane, 0).hostname(),
            "edge-control-plane-0"
        );
    }

    #[test]
    fn malformed_sets_keep_what_they_can() {
        let tags = DeviceTags::parse(&["rackform:cluster=edge", "rackform:pool=control-plane"]);
        assert_eq!(tags.cluster(), Some("edge"));
        assert_eq!(
            tags,
            DeviceTags::Malformed {
                partial: PartialTags {
                    cluster: Some("edge".into()),
                    pool: Some(Pool::ControlPlane),
                    ordinal: None,
                    spec: None,
                },
                error: TagError::Missing { key: "ordinal" },
            }
        );
    }

    #[test]
    fn foreign_devices_are_unmanaged() {
        assert_eq!(DeviceTags::parse::<&str>(&[]), DeviceTags::Unmanaged);
        assert_eq!(
            DeviceTags::parse(&["capp:cluster-id:x", "rackform"]),
            DeviceTags::Unmanaged
        );
    }

    #[test]
    fn incomplete_or_contradictory_sets_are_malformed() {
        let cases: [(&[&str], TagError); 4] = [
            (
                &[
                    "rackform:cluster=a",
                    "rackform:pool=w",
                    "rackform:ordinal=1",
                ],
                TagError::Missing { key: "spec" },
            ),
            (
                &[
                    "rackform:cluster=a",
                    "rackform:cluster=b",
                    "rackform:pool=w",
                ],
                TagError::Conflicting {
                    key: "cluster",
                    first: "a".into(),
                    second: "b".into(),
                },
            ),
            (
                &[
                    "rackform:cluster=a",
                    "rackform:pool=w",
                    "rackform:ordinal=x",
                    "rackform:spec=s",
                ],
                TagError::BadOrdinal { value: "x".into() },
            ),
            (
                &[
                    "rackform:cluster=",
                    "rackform:pool=w",
                    "rackform:ordinal=1",
                    "rackform:spec=s",
                ],
                TagError::Empty { key: "cluster" },
            ),
        ];
        for (input, want) in cases {
            let DeviceTags::Malformed { error, .. } = DeviceTags::parse(input) else {
                panic!("{input:?} should be malformed");
            };
            assert_eq!(error, want);
        }
    }
}
