//! Records into Packet JSON, shaped like the official spec's schemas
//! (`Device`, `IPAssignment`, `IPReservation`, `HardwareReservation`, `Project`, `SSHKey`,
//! `User`, `Meta`).
//!
//! Nested objects the API leaves as `{href}` by default (`project`, `hardware_reservation`)
//! are rendered that way; absent values are omitted, never `null`.

use serde_json::{Map, Value, json};

use super::catalog;
use super::world::{
    AssignmentRec, DeviceRec, HardwareRec, KeyOwner, Project, ReservationRec, SshKeyRec, World,
};

/// Path prefix of every href.
pub const PREFIX: &str = "/metal/v1";

pub fn href(kind: &str, id: &str) -> Value {
    json!({ "href": format!("{PREFIX}/{kind}/{id}") })
}

fn metro_json(code: &str) -> Option<Value> {
    catalog::nested("metro", code).cloned()
}

fn facility_json(code: &str) -> Option<Value> {
    catalog::nested("facility", code).cloned()
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

const ACTIONS: [(&str, &str); 5] = [
    ("power_on", "Power On"),
    ("power_off", "Power Off"),
    ("reboot", "Reboot"),
    ("rescue", "Rescue"),
    ("reinstall", "Reinstall"),
];

pub fn device(world: &World, device: &DeviceRec) -> Value {
    let mut map = Map::new();
    let ips: Vec<Value> = world
        .device_assignments(&device.id)
        .into_iter()
        .map(assignment)
        .collect();
    let actions: Vec<Value> = match device.state.as_str() {
        "active" | "inactive" | "failed" => ACTIONS
            .iter()
            .map(|(kind, name)| json!({ "type": kind, "name": name }))
            .collect(),
        _ => Vec::new(),
    };
    let base = json!({
        "id": device.id,
        "short_id": device.short_id,
        "href": format!("{PREFIX}/devices/{}", device.id),
        "hostname": device.hostname,
        "state": device.state,
        "tags": device.tags,
        "billing_cycle": device.billing_cycle,
        "locked": device.locked,
        "always_pxe": device.always_pxe,
        "spot_instance": false,
        "network_frozen": false,
        "bonding_mode": 4,
        "userdata": device.userdata,
        "customdata": device.customdata,
        "created_at": device.created_at,
        "updated_at": device.updated_at,
        "ip_addresses": ips,
        "actions": actions,
        "project": href("projects", &device.project),
        "project_lite": href("projects", &device.project),
        "ssh_keys": device
            .ssh_keys
            .iter()
            .map(|k| href("ssh-keys", &k.id))
            .collect::<Vec<Value>>(),
        "volumes": [],
        "provisioning_events": [],
    });
    if let Value::Object(base) = base {
        map.extend(base);
    }
    insert_some(
        &mut map,
        "description",
        device.description.clone().map(Value::String),
    );
    insert_some(
        &mut map,
        "plan",
        catalog::nested("plan", &device.plan).cloned(),
    );
    insert_some(
        &mut map,
        "operating_system",
        catalog::nested("os", &device.os).cloned(),
    );
    insert_some(&mut map, "metro", metro_json(&device.metro));
    insert_some(
        &mut map,
        "facility",
        device.facility.as_deref().and_then(facility_json),
    );
    insert_some(
        &mut map,
        "ipxe_script_url",
        device.ipxe_script_url.clone().map(Value::String),
    );
    insert_some(
        &mut map,
        "hardware_reservation",
        device
            .hardware_reservation
            .as_deref()
            .map(|id| href("hardware-reservations", id)),
    );
    if device.state == "provisioning" {
        map.insert("provisioning_percentage".into(), json!(50.0));
    }
    Value::Object(map)
}

pub fn assignment(assignment: &AssignmentRec) -> Value {
    let mut value = json!({
        "id": assignment.id,
        "href": format!("{PREFIX}/ips/{}", assignment.id),
        "type": "IPAssignment",
        "address": assignment.address,
        "address_family": assignment.family,
        "cidr": assignment.cidr,
        "netmask": assignment.netmask,
        "network": assignment.network,
        "gateway": assignment.gateway,
        "public": assignment.public,
        "management": assignment.management,
        "manageable": true,
        "global_ip": false,
        "enabled": true,
        "state": "active",
        "assigned_to": href("devices", &assignment.device),
        "parent_block": {
            "network": assignment.network,
            "netmask": assignment.netmask,
            "cidr": assignment.cidr,
            "href": format!("{PREFIX}/ips/{}", assignment.reservation.as_deref().unwrap_or(&assignment.id)),
        },
        "created_at": assignment.created_at,
    });
    if let Some(metro) = metro_json(&assignment.metro) {
        value["metro"] = metro;
    }
    value
}

pub fn reservation(world: &World, reservation: &ReservationRec) -> Value {
    let assignments: Vec<Value> = world
        .reservation_assignments(&reservation.id)
        .into_iter()
        .map(assignment)
        .collect();
    let netmask = if reservation.family == 4 {
        let mask = if reservation.cidr == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(reservation.cidr))
        };
        let [a, b, c, d] = mask.to_be_bytes();
        format!("{a}.{b}.{c}.{d}")
    } else {
        "ffff:ffff:ffff:ff00::".to_owned()
    };
    let mut value = json!({
        "id": reservation.id,
        "href": format!("{PREFIX}/ips/{}", reservation.id),
        "type": reservation.kind,
        "address": reservation.network,
        "network": reservation.network,
        "gateway": reservation.network,
        "netmask": netmask,
        "cidr": reservation.cidr,
        "address_family": reservation.family,
        "public": reservation.public,
        "management": false,
        "manageable": true,
        "global_ip": reservation.kind == "global_ipv4",
        "addon": true,
        "bill": true,
        "enabled": true,
        "state": reservation.state,
        "tags": reservation.tags,
        "assignments": assignments,
        "available": format!("{PREFIX}/ips/{}/available", reservation.id),
        "customdata": {},
        "project": href("projects", &reservation.project),
        "project_lite": href("projects", &reservation.project),
        "created_at": reservation.created_at,
    });
    if let Some(details) = &reservation.details {
        value["details"] = json!(details);
    }
    if let Some(metro) = metro_json(&reservation.metro) {
        value["metro"] = metro;
    }
    value
}

pub fn hardware(hardware: &HardwareRec) -> Value {
    let mut value = json!({
        "id": hardware.id,
        "short_id": hardware.short_id,
        "href": format!("{PREFIX}/hardware-reservations/{}", hardware.id),
        "provisionable": hardware.provisionable(),
        "spare": false,
        "need_of_service": hardware.need_of_service,
        "custom_rate": 0.0,
        "switch_uuid": &hardware.id[..8],
        "project": href("projects", &hardware.project),
        "created_at": hardware.created_at,
    });
    if let Some(plan) = catalog::nested("plan", &hardware.plan) {
        value["plan"] = plan.clone();
    }
    if let Some(facility) = facility_json(&hardware.facility) {
        value["facility"] = facility;
    }
    if let Some(device) = &hardware.device {
        value["device"] = href("devices", device);
    }
    value
}

pub fn project(world: &World, project: &Project) -> Value {
    let keys: Vec<Value> = world
        .keys_of(&KeyOwner::Project(project.id.clone()))
        .into_iter()
        .map(|k| href("ssh-keys", &k.id))
        .collect();
    json!({
        "id": project.id,
        "href": format!("{PREFIX}/projects/{}", project.id),
        "name": project.name,
        "type": "default",
        "tags": [],
        "customdata": {},
        "network_status": {},
        "max_devices": {},
        "created_at": project.created_at,
        "updated_at": project.created_at,
        "devices": [],
        "members": [],
        "memberships": [],
        "invitations": [],
        "ssh_keys": keys,
        "volumes": [],
        "bgp_config": { "href": format!("{PREFIX}/projects/{}/bgp-config", project.id) },
    })
}

/// An SSH key (`SSHKey`): its `entity` is the project or the user it belongs to.
pub fn ssh_key(key: &SshKeyRec) -> Value {
    let entity = match &key.owner {
        KeyOwner::Project(id) => href("projects", id),
        KeyOwner::User(id) => href("users", id),
    };
    json!({
        "id": key.id,
        "href": format!("{PREFIX}/ssh-keys/{}", key.id),
        "label": key.label,
        "key": key.key,
        "fingerprint": key.fingerprint,
        "tags": key.tags,
        "entity": entity,
        "created_at": key.created_at,
        "updated_at": key.updated_at,
    })
}

/// The user every token stands for (`User`), with the fields a client reads.
pub fn user(world: &World) -> Value {
    let first = world.projects.values().next();
    let mut value = json!({
        "id": world.user_id,
        "short_id": world.user_id.get(..8).unwrap_or(&world.user_id),
        "href": format!("{PREFIX}/users/{}", world.user_id),
        "full_name": "Simulated User",
        "first_name": "Simulated",
        "last_name": "User",
        "email": "user@sim.invalid",
        "emails": [],
        "customdata": {},
        "max_projects": 100,
        "max_organizations": 10,
        "timezone": "UTC",
    });
    if let Some(project) = first {
        value["default_project_id"] = json!(project.id);
        value["created_at"] = json!(project.created_at);
        value["updated_at"] = json!(project.created_at);
    }
    value
}

/// One page of a list: the page's slice and the `meta` object, with hrefs that keep the
/// request's other query parameters.
pub struct Page {
    pub page: usize,
    pub per_page: usize,
}

impl Page {
    pub fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        let start = (self.page - 1)
            .saturating_mul(self.per_page)
            .min(items.len());
        let end = start.saturating_add(self.per_page).min(items.len());
        items[start..end].to_vec()
    }

    pub fn meta(&self, path: &str, other_query: &str, total: usize) -> Value {
        let last_page = total.div_ceil(self.per_page).max(1);
        let link = |page: usize| {
            let mut href = format!("{PREFIX}{path}?page={page}&per_page={}", self.per_page);
            if !other_query.is_empty() {
                href.push('&');
                href.push_str(other_query);
            }
            json!({ "href": href })
        };
        let mut meta = json!({
            "first": link(1),
            "last": link(last_page),
            "self": link(self.page),
            "total": total,
            "current_page": self.page,
            "last_page": last_page,
        });
        if self.page > 1 {
            meta["previous"] = link((self.page - 1).min(last_page));
        }
        if self.page < last_page {
            meta["next"] = link(self.page + 1);
        }
        meta
    }
}
