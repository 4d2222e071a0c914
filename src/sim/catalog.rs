//! The simulator's fixed catalogue: metros, facilities, plans and operating systems.
//!
//! Slugs and codes are the real ones; ids are stable UUIDs derived from the slug so that
//! answers do not change between runs.

use serde_json::{Value, json};

/// A metro: code, name, country, facilities in it.
pub struct Metro {
    pub code: &'static str,
    pub name: &'static str,
    pub country: &'static str,
    pub facilities: &'static [(&'static str, &'static str)],
}

pub const METROS: &[Metro] = &[
    Metro {
        code: "sv",
        name: "Silicon Valley",
        country: "US",
        facilities: &[("sv15", "Silicon Valley 15"), ("sv16", "Silicon Valley 16")],
    },
    Metro {
        code: "da",
        name: "Dallas",
        country: "US",
        facilities: &[("da11", "Dallas 11"), ("da6", "Dallas 6")],
    },
    Metro {
        code: "dc",
        name: "Washington DC",
        country: "US",
        facilities: &[("dc13", "Ashburn 13"), ("dc10", "Ashburn 10")],
    },
    Metro {
        code: "ny",
        name: "New York",
        country: "US",
        facilities: &[("ny5", "New York 5"), ("ny7", "New York 7")],
    },
    Metro {
        code: "ch",
        name: "Chicago",
        country: "US",
        facilities: &[("ch3", "Chicago 3")],
    },
    Metro {
        code: "la",
        name: "Los Angeles",
        country: "US",
        facilities: &[("la4", "Los Angeles 4")],
    },
    Metro {
        code: "am",
        name: "Amsterdam",
        country: "NL",
        facilities: &[("am6", "Amsterdam 6")],
    },
    Metro {
        code: "fr",
        name: "Frankfurt",
        country: "DE",
        facilities: &[("fr2", "Frankfurt 2"), ("fr8", "Frankfurt 8")],
    },
    Metro {
        code: "ld",
        name: "London",
        country: "GB",
        facilities: &[("ld7", "London 7")],
    },
    Metro {
        code: "pa",
        name: "Paris",
        country: "FR",
        facilities: &[("pa4", "Paris 4")],
    },
    Metro {
        code: "sg",
        name: "Singapore",
        country: "SG",
        facilities: &[("sg1", "Singapore 1")],
    },
    Metro {
        code: "ty",
        name: "Tokyo",
        country: "JP",
        facilities: &[("ty11", "Tokyo 11")],
    },
    Metro {
        code: "sy",
        name: "Sydney",
        country: "AU",
        facilities: &[("sy5", "Sydney 5")],
    },
];

/// A plan: slug, class line, CPU, memory, hourly price, metros it is sold in.
pub struct Plan {
    pub slug: &'static str,
    pub name: &'static str,
    pub line: &'static str,
    pub cpu: (u32, &'static str),
    pub memory: &'static str,
    pub drives: &'static [(u32, &'static str, &'static str, &'static str)],
    pub price_hour: f64,
    pub arch: &'static str,
    pub metros: &'static [&'static str],
}

const ALL_METROS: &[&str] = &[
    "sv", "da", "dc", "ny", "ch", "la", "am", "fr", "ld", "pa", "sg", "ty", "sy",
];

pub const PLANS: &[Plan] = &[
    Plan {
        slug: "c3.small.x86",
        name: "c3.small.x86",
        line: "baremetal",
        cpu: (1, "Intel(R) Xeon(R) E-2278G CPU @ 3.40GHz"),
        memory: "32GB",
        drives: &[(2, "480GB", "SSD", "boot")],
        price_hour: 0.75,
        arch: "x86_64",
        metros: ALL_METROS,
    },
    Plan {
        slug: "c3.medium.x86",
        name: "c3.medium.x86",
        line: "baremetal",
        cpu: (1, "AMD EPYC 7402P 24-Core Processor @ 2.8GHz"),
        memory: "64GB",
        drives: &[(2, "240GB", "SSD", "boot"), (2, "480GB", "SSD", "storage")],
        price_hour: 1.5,
        arch: "x86_64",
        metros: ALL_METROS,
    },
    Plan {
        slug: "m3.small.x86",
        name: "m3.small.x86",
        line: "baremetal",
        cpu: (1, "Intel(R) Xeon(R) E-2378G CPU @ 2.80GHz"),
        memory: "64GB",
        drives: &[(2, "480GB", "SSD", "boot")],
        price_hour: 1.05,
        arch: "x86_64",
        metros: &["sv", "da", "dc", "ny", "am", "fr", "sg"],
    },
    Plan {
        slug: "m3.large.x86",
        name: "m3.large.x86",
        line: "baremetal",
        cpu: (1, "AMD EPYC 7502P 32-Core Processor @ 2.5GHz"),
        memory: "256GB",
        drives: &[(2, "240GB", "SSD", "boot"), (2, "3.8TB", "NVME", "storage")],
        price_hour: 3.1,
        arch: "x86_64",
        metros: ALL_METROS,
    },
    Plan {
        slug: "n3.xlarge.x86",
        name: "n3.xlarge.x86",
        line: "baremetal",
        cpu: (2, "Intel(R) Xeon(R) Gold 6314U CPU @ 2.30GHz"),
        memory: "512GB",
        drives: &[(2, "240GB", "SSD", "boot"), (4, "3.8TB", "NVME", "storage")],
        price_hour: 4.5,
        arch: "x86_64",
        metros: &["sv", "da", "dc", "am", "fr"],
    },
    Plan {
        slug: "s3.xlarge.x86",
        name: "s3.xlarge.x86",
        line: "baremetal",
        cpu: (2, "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz"),
        memory: "192GB",
        drives: &[(2, "960GB", "SSD", "boot"), (12, "8TB", "HDD", "storage")],
        price_hour: 2.95,
        arch: "x86_64",
        metros: &["sv", "da", "dc", "am"],
    },
    Plan {
        slug: "c3.large.arm64",
        name: "c3.large.arm64",
        line: "baremetal",
        cpu: (1, "Ampere Altra Q80-30 80-core processor @ 2.8GHz"),
        memory: "256GB",
        drives: &[(1, "960GB", "NVME", "boot")],
        price_hour: 2.5,
        arch: "aarch64",
        metros: &["da", "dc", "sv", "fr"],
    },
];

/// An operating system: slug, distro, version, the architectures it runs on.
pub struct Os {
    pub slug: &'static str,
    pub name: &'static str,
    pub distro: &'static str,
    pub version: &'static str,
    pub arches: &'static [&'static str],
}

const BOTH: &[&str] = &["x86_64", "aarch64"];
const X86: &[&str] = &["x86_64"];

pub const OPERATING_SYSTEMS: &[Os] = &[
    Os {
        slug: "ubuntu_20_04",
        name: "Ubuntu 20.04 LTS",
        distro: "ubuntu",
        version: "20.04",
        arches: BOTH,
    },
    Os {
        slug: "ubuntu_22_04",
        name: "Ubuntu 22.04 LTS",
        distro: "ubuntu",
        version: "22.04",
        arches: BOTH,
    },
    Os {
        slug: "ubuntu_24_04",
        name: "Ubuntu 24.04 LTS",
        distro: "ubuntu",
        version: "24.04",
        arches: BOTH,
    },
    Os {
        slug: "debian_11",
        name: "Debian 11",
        distro: "debian",
        version: "11",
        arches: BOTH,
    },
    Os {
        slug: "debian_12",
        name: "Debian 12",
        distro: "debian",
        version: "12",
        arches: BOTH,
    },
    Os {
        slug: "rocky_8",
        name: "Rocky Linux 8",
        distro: "rocky",
        version: "8",
        arches: BOTH,
    },
    Os {
        slug: "rocky_9",
        name: "Rocky Linux 9",
        distro: "rocky",
        version: "9",
        arches: BOTH,
    },
    Os {
        slug: "alma_9",
        name: "AlmaLinux 9",
        distro: "alma",
        version: "9",
        arches: BOTH,
    },
    Os {
        slug: "flatcar_stable",
        name: "Flatcar Container Linux (Stable)",
        distro: "flatcar",
        version: "stable",
        arches: BOTH,
    },
    Os {
        slug: "talos_v1",
        name: "Talos Linux v1",
        distro: "talos",
        version: "v1",
        arches: X86,
    },
    Os {
        slug: "windows_2022",
        name: "Windows Server 2022",
        distro: "windows",
        version: "2022",
        arches: X86,
    },
    Os {
        slug: "custom_ipxe",
        name: "Custom iPXE",
        distro: "custom_ipxe",
        version: "1",
        arches: BOTH,
    },
];

/// A stable UUID for a catalogue entry.
pub fn stable_id(kind: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut h2: u64 = 0x8422_2325_cbf2_9ce4;
    for byte in kind.bytes().chain([b'/']).chain(key.bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        h2 = (h2 ^ u64::from(byte))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }
    crate::rng::format_uuid(h, h2)
}

pub fn metro(code: &str) -> Option<&'static Metro> {
    let code = code.to_ascii_lowercase();
    METROS.iter().find(|m| m.code == code)
}

/// The metro a facility belongs to, and the facility's name.
pub fn facility(code: &str) -> Option<(&'static Metro, &'static str, &'static str)> {
    let code = code.to_ascii_lowercase();
    METROS.iter().find_map(|m| {
        m.facilities
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, name)| (m, *c, *name))
    })
}

pub fn plan(slug: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.slug == slug)
}

pub fn os(slug: &str) -> Option<&'static Os> {
    OPERATING_SYSTEMS.iter().find(|o| o.slug == slug)
}

impl Plan {
    pub fn sold_in(&self, metro: &str) -> bool {
        self.metros.contains(&metro)
    }
}

impl Os {
    pub fn runs_on(&self, plan: &Plan) -> bool {
        self.arches.contains(&plan.arch)
    }
}

pub fn metro_json(metro: &Metro) -> Value {
    json!({
        "id": stable_id("metro", metro.code),
        "code": metro.code,
        "name": metro.name,
        "country": metro.country,
    })
}

pub fn facility_json(metro: &Metro, code: &str, name: &str) -> Value {
    json!({
        "id": stable_id("facility", code),
        "code": code,
        "name": name,
        "features": ["baremetal", "backend_transfer", "global_ipv4"],
        "ip_ranges": ["2604:1380::/36", "147.75.192.0/21"],
        "metro": metro_json(metro),
    })
}

pub fn plan_json(plan: &Plan) -> Value {
    let price = json!({ "hour": plan.price_hour });
    let metros: Vec<Value> = plan
        .metros
        .iter()
        .map(|code| json!({ "href": format!("/metal/v1/locations/metros/{}", stable_id("metro", code)), "price": price }))
        .collect();
    let facilities: Vec<Value> = plan
        .metros
        .iter()
        .filter_map(|code| metro(code))
        .flat_map(|m| m.facilities.iter())
        .map(|(code, _)| json!({ "href": format!("/metal/v1/facilities/{}", stable_id("facility", code)), "price": price }))
        .collect();
    let drives: Vec<Value> = plan
        .drives
        .iter()
        .map(|(count, size, kind, category)| json!({ "count": count, "size": size, "type": kind, "category": category }))
        .collect();
    json!({
        "id": stable_id("plan", plan.slug),
        "slug": plan.slug,
        "name": plan.name,
        "class": plan.slug,
        "line": plan.line,
        "type": "standard",
        "legacy": false,
        "description": format!("{} bare-metal server", plan.name),
        "categories": ["compute"],
        "deployment_types": ["on_demand", "spot_market"],
        "available_in": facilities,
        "available_in_metros": metros,
        "pricing": { "hour": plan.price_hour },
        "specs": {
            "cpus": [{ "count": plan.cpu.0, "type": plan.cpu.1 }],
            "memory": { "total": plan.memory },
            "drives": drives,
            "nics": [{ "count": 2, "type": "25Gbps" }],
            "features": { "raid": true, "txt": true, "uefi": true },
        },
    })
}

pub fn os_json(os: &Os) -> Value {
    let provisionable_on: Vec<&str> = PLANS
        .iter()
        .filter(|p| os.runs_on(p))
        .map(|p| p.slug)
        .collect();
    json!({
        "id": stable_id("os", os.slug),
        "slug": os.slug,
        "name": os.name,
        "distro": os.distro,
        "distro_label": os.name,
        "version": os.version,
        "provisionable_on": provisionable_on,
        "preinstallable": false,
        "licensed": os.distro == "windows",
        "pricing": {},
        "default_operating_system": os.slug == "ubuntu_22_04",
    })
}

/// A plan as nested in a device or reservation: without the availability lists.
pub fn plan_summary_json(plan: &Plan) -> Value {
    let mut value = plan_json(plan);
    if let Value::Object(map) = &mut value {
        map.remove("available_in");
        map.remove("available_in_metros");
    }
    value
}

/// Nested catalogue objects, rendered once: `kind` is `plan`, `os`, `metro` or `facility`.
pub fn nested(kind: &str, key: &str) -> Option<&'static Value> {
    static CACHE: std::sync::OnceLock<std::collections::BTreeMap<String, Value>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut cache = std::collections::BTreeMap::new();
        for plan in PLANS {
            cache.insert(format!("plan/{}", plan.slug), plan_summary_json(plan));
        }
        for os in OPERATING_SYSTEMS {
            cache.insert(format!("os/{}", os.slug), os_json(os));
        }
        for metro in METROS {
            cache.insert(format!("metro/{}", metro.code), metro_json(metro));
            for (code, name) in metro.facilities {
                cache.insert(format!("facility/{code}"), facility_json(metro, code, name));
            }
        }
        cache
    });
    cache.get(&format!("{kind}/{}", key.to_ascii_lowercase()))
}
