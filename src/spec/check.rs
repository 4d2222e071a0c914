//! Checks on single values: names, Kubernetes labels and taints, versions, CIDRs, keys.
//!
//! Each returns `Err(reason)` with a reason a person can act on; the caller knows the file
//! and field. Pure functions, no I/O.

use std::net::IpAddr;

use ipnet::IpNet;

/// Longest hostname label Packet and DNS accept.
pub const MAX_LABEL: usize = 63;

/// A DNS-1123 label: lower-case letters, digits and `-`, starting and ending alphanumeric.
pub fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_LABEL {
        return Err(format!(
            "is {} characters, the limit is {MAX_LABEL}",
            value.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !value.chars().all(ok_char) {
        return Err("may hold only lower-case letters, digits and `-`".into());
    }
    if !value.starts_with(edge) || !value.ends_with(edge) {
        return Err("must start and end with a lower-case letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.len() > 253 {
        return Err(format!("is {} characters, the limit is 253", value.len()));
    }
    for label in value.split('.') {
        dns_label(label).map_err(|why| format!("part `{label}` {why}"))?;
    }
    Ok(())
}

/// The name part of a Kubernetes qualified name (label key name, label value).
fn qualified_part(value: &str, what: &str) -> Result<(), String> {
    if value.len() > MAX_LABEL {
        return Err(format!(
            "{what} is {} characters, the limit is {MAX_LABEL}",
            value.len()
        ));
    }
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.chars().all(inner) {
        return Err(format!(
            "{what} may hold only letters, digits, `-`, `_` and `.`"
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!("{what} must start and end with a letter or digit"));
    }
    Ok(())
}

/// A Kubernetes label (or taint) key: `[prefix/]name`.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() {
        return Err("the name after the prefix must not be empty".into());
    }
    qualified_part(name, "the name")?;
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|why| format!("prefix `{prefix}`: {why}"))?;
    }
    Ok(())
}

/// A Kubernetes label value: empty, or a qualified name part.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        qualified_part(value, "the value")
    }
}

/// Labels in the `kubernetes.io` and `k8s.io` namespaces that a kubelet may set on its own
/// node (kubelet's `--node-labels` allow list); the NodeRestriction admission plugin
/// rejects the rest, so a node given one would never register.
const KUBELET_ALLOWED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
];
const KUBELET_ALLOWED_PREFIXES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// A node label the kubelet may set: a valid key and value outside Kubernetes' reserved
/// namespaces, or one of the few the kubelet is allowed.
pub fn node_label(key: &str, value: &str) -> Result<(), String> {
    label_key(key).map_err(|why| format!("label key `{key}`: {why}"))?;
    label_value(value).map_err(|why| format!("label `{key}` value `{value}`: {why}"))?;
    if let Some((prefix, _)) = key.split_once('/') {
        let reserved = ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")));
        let allowed = KUBELET_ALLOWED_LABELS.contains(&key)
            || KUBELET_ALLOWED_PREFIXES
                .iter()
                .any(|allowed| prefix == *allowed || prefix.ends_with(&format!(".{allowed}")));
        if reserved && !allowed {
            return Err(format!(
                "label `{key}` is in a namespace the kubelet may not set on its own node \
                 (only `node.kubernetes.io/` and `kubelet.kubernetes.io/` prefixes and a few \
                 well-known labels are allowed); use your own prefix, e.g. `example.com/{}`",
                &key[key.find('/').map_or(0, |at| at + 1)..]
            ));
        }
    }
    Ok(())
}

/// A Kubernetes version that kubeadm can install: `v1.MINOR.PATCH` (the `v` is optional).
pub fn kubernetes_version(value: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("`{value}` is not a Kubernetes version like `v1.31.4`");
    let digits = value.strip_prefix('v').unwrap_or(value);
    let parts: Vec<&str> = digits.split('.').collect();
    let [major, minor, patch] = parts.as_slice() else {
        return Err(bad());
    };
    let number = |part: &str| {
        (!part.is_empty() && part.len() <= 4 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let (Some(major), Some(minor), Some(patch)) = (number(major), number(minor), number(patch))
    else {
        return Err(bad());
    };
    if major != 1 {
        return Err(format!(
            "Kubernetes {major}.x does not exist; versions start with `v1.`"
        ));
    }
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(format!(
            "Kubernetes v1.{minor} is not supported; rackform installs v1.{MIN_MINOR} to v1.{MAX_MINOR}"
        ));
    }
    Ok((major, minor, patch))
}

/// The oldest and newest Kubernetes minor versions rackform renders kubeadm configs for.
pub const MIN_MINOR: u32 = 28;
pub const MAX_MINOR: u32 = 36;

/// A CIDR with no host bits set.
/// A duration written as Go and Kubernetes write them, in hours, minutes and seconds
/// (`90s`, `10m`, `1h30m`), from one second to a week; in seconds.
pub fn duration(value: &str) -> Result<i64, String> {
    let bad = || format!("`{value}` is not a duration like `90s`, `10m` or `1h30m`");
    let mut total: i64 = 0;
    let mut rest = value;
    let mut last_unit = u8::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return Err(bad());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        let (unit, scale) = match rest.as_bytes().get(digits) {
            Some(b'h') => (0, 3600),
            Some(b'm') => (1, 60),
            Some(b's') => (2, 1),
            _ => return Err(bad()),
        };
        // Each unit once, largest first.
        if last_unit != u8::MAX && unit <= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total += number * scale;
        rest = &rest[digits + 1..];
    }
    match total {
        0 if value.is_empty() => Err(bad()),
        0 => Err(format!("`{value}` is no time at all; give at least 1s")),
        t if t > 7 * 24 * 3600 => Err(format!("`{value}` is more than a week (168h)")),
        t => Ok(t),
    }
}

/// A percentage from 0 to 100, written `40%`.
pub fn percent(value: &str) -> Result<u32, String> {
    let bad = || format!("`{value}` is not a number or a percentage like `40%`");
    let digits = value.strip_suffix('%').ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match digits.parse::<u32>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!("`{value}` is more than 100%")),
    }
}

pub fn cidr(value: &str) -> Result<IpNet, String> {
    let net: IpNet = value
        .parse()
        .map_err(|_| format!("`{value}` is not a CIDR like `10.244.0.0/16`"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{value}` has host bits set; did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A UUID in its canonical 8-4-4-4-12 hex form.
pub fn uuid(value: &str) -> Result<(), String> {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if lengths == [8, 4, 4, 4, 12] && hex {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a UUID like `6ae6fe6b-5b3c-4f5a-9b1d-0c2f3e4d5a6b`"
        ))
    }
}

/// A metro code: two lower-case letters (`da`, `ny`, `am`).
pub fn metro(value: &str) -> Result<(), String> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a metro code like `da` (two lower-case letters)"
        ))
    }
}

/// A facility code: two lower-case letters and a number (`da11`, `ny5`).
pub fn facility(value: &str) -> Result<(), String> {
    let (letters, digits) = value.split_at(value.len().min(2));
    if letters.len() == 2
        && letters.bytes().all(|b| b.is_ascii_lowercase())
        && !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!("`{value}` is not a facility code like `da11`"))
    }
}

/// A Packet plan or operating-system slug (`c3.small.x86`, `ubuntu_24_04`).
pub fn slug(value: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if !value.is_empty()
        && value.len() <= 64
        && value.chars().all(ok)
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a slug like `c3.small.x86` or `ubuntu_24_04`"
        ))
    }
}

/// An OpenSSH public key line: `<type> <base64> [comment]`.
pub fn ssh_public_key(value: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut fields = value.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    if kind.contains("PRIVATE KEY") || value.contains("PRIVATE KEY") {
        return Err("this is a private key; give the public key (the `.pub` file)".into());
    }
    if !TYPES.contains(&kind) {
        return Err(format!(
            "not an SSH public key: expected it to start with one of {}",
            TYPES.join(", ")
        ));
    }
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if body.len() < 16 || !body.chars().all(base64) {
        return Err(format!(
            "the `{kind}` key's second field is not base64 key data"
        ));
    }
    Ok(())
}

/// An age X25519 recipient: `age1` and 58 bech32 characters.
pub fn age_recipient(value: &str) -> Result<(), String> {
    const BECH32: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if value.starts_with("AGE-SECRET-KEY-") {
        return Err(
            "this is an age identity (a secret key); give its public recipient (`age-keygen -y`)"
                .into(),
        );
    }
    match value.strip_prefix("age1") {
        Some(data) if data.len() == 58 && data.chars().all(|c| BECH32.contains(c)) => Ok(()),
        _ => Err(format!(
            "`{value}` is not an age recipient like `age1...` (62 characters)"
        )),
    }
}

/// An `https://host[:port]` API server URL; returns host and port (443 when absent).
pub fn https_endpoint(value: &str) -> Result<(String, u16), String> {
    let rest = value.strip_prefix("https://").ok_or_else(|| {
        format!("`{value}` must be an https:// URL like `https://cp.example.com:6443`")
    })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!("`{value}` must be only scheme, host and port"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{port}` is not a port"))?;
            (host, port)
        }
        _ => (rest, 443),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_err() {
        dns_subdomain(&bare.to_ascii_lowercase()).map_err(|why| format!("host `{host}`: {why}"))?;
    }
    Ok((host.to_owned(), port))
}

/// A relative path inside the repository: no `..`, not absolute, no empty parts.
pub fn repo_relative_dir(value: &str) -> Result<(), String> {
    if value.starts_with('/') || value.contains('\\') {
        return Err(format!(
            "`{value}` must be a relative path with `/` separators"
        ));
    }
    if value
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "`{value}` must stay inside the repository (no `..`, `.` or empty parts)"
        ));
    }
    Ok(())
}

/// An object's `apiVersion`: `<version>` for the core group, else `<group>/<version>`.
pub fn api_version(value: &str) -> Result<(), String> {
    let bad = || format!("`{value}` is not an apiVersion like `v1` or `apps/v1`");
    let (group, version) = match value.split_once('/') {
        Some((group, version)) => (Some(group), version),
        None => (None, value),
    };
    if let Some(group) = group {
        dns_subdomain(group).map_err(|_| bad())?;
    }
    dns_label(version).map_err(|_| bad())?;
    Ok(())
}

/// An object's `kind`: a name in CamelCase such as `DaemonSet`.
pub fn kind(value: &str) -> Result<(), String> {
    if value.is_empty()
        || !value.starts_with(|c: char| c.is_ascii_alphabetic())
        || !value.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "`{value}` is not a kind like `DaemonSet` (letters and digits)"
        ));
    }
    Ok(())
}

/// An object's `metadata.name`, as it must be to name the object in a request path (each
/// resource has stricter rules of its own, which its API server applies).
pub fn object_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value == "." || value == ".." || value.contains(['/', '%']) {
        return Err(format!(
            "`{value}` cannot name an object (`.`, `..`, `/` and `%` are not allowed)"
        ));
    }
    if value.len() > 253 {
        return Err(format!("is {} characters, the limit is 253", value.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percentages() {
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("10m"), Ok(600));
        assert_eq!(duration("1h30m"), Ok(5400));
        assert_eq!(duration("168h"), Ok(7 * 24 * 3600));
        for bad in ["", "10", "m", "1.5h", "10m1h", "5m5m", "-1s", "10 m", "1d"] {
            assert!(
                duration(bad).unwrap_err().contains("not a duration"),
                "{bad}"
            );
        }
        assert!(duration("0s").unwrap_err().contains("no time at all"));
        assert!(duration("169h").unwrap_err().contains("more than a week"));
        assert_eq!(percent("40%"), Ok(40));
        assert_eq!(percent("0%"), Ok(0));
        assert!(percent("101%").unwrap_err().contains("more than 100%"));
        for bad in ["40", "%", "4.5%", "-1%"] {
            assert!(percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert!(node_label("example.com/gpu", "true").is_ok());
        assert!(node_label("tier", "").is_ok());
        assert!(
            node_label(
                "node.kubernetes.io/exclude-from-external-load-balancers",
                ""
            )
            .is_ok()
        );
        assert!(node_label("topology.kubernetes.io/zone", "da11").is_ok());
        assert!(
            node_label("node-role.kubernetes.io/worker", "")
                .unwrap_err()
                .contains("may not set")
        );
        assert!(node_label("Bad_/x", "y").is_err());
        assert!(node_label("x", "-y").is_err());
        assert!(node_label("x", &"a".repeat(64)).is_err());
        assert!(node_label("a/b/c", "y").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(kubernetes_version("v1.31.4"), Ok((1, 31, 4)));
        assert_eq!(kubernetes_version("1.30.0"), Ok((1, 30, 0)));
        assert!(kubernetes_version("v1.31").is_err());
        assert!(kubernetes_version("latest").is_err());
        assert!(kubernetes_version("v2.0.0").is_err());
        assert!(
            kubernetes_version("v1.12.0")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(kubernetes_version("v1.31.4-rc.0").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr("10.244.0.0/16").is_ok());
        assert!(cidr("fd00:10:244::/56").is_ok());
        assert!(cidr("10.244.0.1/16").unwrap_err().contains("10.244.0.0/16"));
        assert!(cidr("10.244.0.0").is_err());
        let a = cidr("10.0.0.0/8").unwrap();
        let b = cidr("10.96.0.0/12").unwrap();
        let c = cidr("192.168.0.0/16").unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a) && !overlaps(&a, &c));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            https_endpoint("https://cp.example.com:6443"),
            Ok(("cp.example.com".into(), 6443))
        );
        assert_eq!(
            https_endpoint("https://10.0.0.1"),
            Ok(("10.0.0.1".into(), 443))
        );
        assert_eq!(
            https_endpoint("https://[fd00::1]:6443"),
            Ok(("[fd00::1]".into(), 6443))
        );
        assert!(https_endpoint("http://cp.example.com").is_err());
        assert!(https_endpoint("https://cp.example.com:99999").is_err());
        assert!(https_endpoint("https://user@cp.example.com").is_err());
    }

    #[test]
    fn names_and_codes() {
        assert!(dns_label("edge-1").is_ok());
        assert!(dns_label("Edge").is_err());
        assert!(dns_label("-edge").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(metro("da").is_ok() && metro("dal").is_err());
        assert!(facility("da11").is_ok() && facility("da").is_err());
        assert!(uuid("6ae6fe6b-5b3c-4f5a-9b1d-0c2f3e4d5a6b").is_ok());
        assert!(uuid("6ae6fe6b5b3c4f5a9b1d0c2f3e4d5a6b").is_err());
        assert!(
            age_recipient("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p").is_ok()
        );
        assert!(age_recipient("age1short").is_err());
        assert!(
            ssh_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKzSl6Z4z alice@laptop").is_ok()
        );
        assert!(
            ssh_public_key("-----BEGIN OPENSSH PRIVATE KEY-----")
                .unwrap_err()
                .contains("private")
        );
        assert!(repo_relative_dir("clusters").is_ok() && repo_relative_dir("../x").is_err());
    }
}
