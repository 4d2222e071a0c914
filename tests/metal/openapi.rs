//! The simulator's answers, checked against the official OpenAPI spec
//! (`../shared/reference/metal-openapi/openapi.yaml`) by the real `check-jsonschema`.
//!
//! Each recorded answer is looked up in the spec by path template, method and status; the
//! response schema found there (with every `$ref` kept inside one document under
//! `#/components/schemas/...`, and OpenAPI 3.0 `nullable` turned into a `null` type) is
//! what the answer must satisfy. One `check-jsonschema` run checks them all.

use std::process::Command;

use serde_json::{Map, Value, json};

use rackform::sim::{Faults, HardwareSeed, SimConfig};

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/metal-openapi/openapi.yaml"
);

/// OpenAPI 3.0 schema → JSON Schema (draft 7): `nullable`, and keywords JSON Schema lacks.
fn to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in [
                "example",
                "examples",
                "discriminator",
                "xml",
                "externalDocs",
            ] {
                map.remove(key);
            }
            for child in map.values_mut() {
                to_json_schema(child);
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(kind)) => {
                        let kind = kind.clone();
                        map.insert("type".into(), json!([kind, "null"]));
                        if let Some(Value::Array(options)) = map.get_mut("enum") {
                            options.push(Value::Null);
                        }
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), json!([inner, { "type": "null" }]));
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

/// One recorded exchange: what was asked and what came back.
struct Recorded {
    label: String,
    method: &'static str,
    template: &'static str,
    status: u16,
    body: Option<Value>,
}

struct Recorder {
    http: reqwest::Client,
    base: String,
    recorded: Vec<Recorded>,
}

impl Recorder {
    async fn call(
        &mut self,
        method: &'static str,
        template: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .header("X-Auth-Token", "spec-check");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).unwrap())
        };
        self.recorded.push(Recorded {
            label: format!("{} {path} -> {status}", method),
            method,
            template,
            status,
            body: body.clone(),
        });
        body
    }
}

fn check_jsonschema() -> Option<Command> {
    let ok = |mut command: Command| {
        command
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if ok(Command::new("check-jsonschema")) {
        return Some(Command::new("check-jsonschema"));
    }
    let mut module = Command::new("python3");
    module.args(["-m", "check_jsonschema"]);
    if ok({
        let mut c = Command::new("python3");
        c.args(["-m", "check_jsonschema"]);
        c
    }) {
        return Some(module);
    }
    None
}

#[tokio::test]
async fn sim_answers_match_the_official_openapi_spec() {
    let Some(checker) = check_jsonschema() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "check-jsonschema is required in CI (pip install check-jsonschema)"
        );
        eprintln!("skipped: check-jsonschema is not installed (pip install check-jsonschema)");
        return;
    };
    let spec: Value = serde_yaml::from_str(
        &std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("reading {SPEC}: {e}")),
    )
    .unwrap();

    let sim = super::start_sim(SimConfig {
        hardware_reservations: vec![HardwareSeed {
            id: None,
            plan: "c3.small.x86".into(),
            facility: "da11".into(),
        }],
        ..SimConfig::default()
    })
    .await;
    let project = sim.project_id("rackform").unwrap();
    let hardware_id = {
        let client = super::client(&sim);
        use rackform::metal::Metal;
        client
            .list_hardware_reservations(&rackform::metal::ProjectId(project.clone()))
            .await
            .unwrap()[0]
            .id
            .to_string()
    };
    let mut r = Recorder {
        http: reqwest::Client::new(),
        base: sim.base_url(),
        recorded: Vec::new(),
    };
    let p = |suffix: &str| format!("/projects/{project}{suffix}");

    r.call(
        "POST",
        "/projects",
        "/projects",
        Some(json!({"name": "spec"})),
    )
    .await;
    r.call("GET", "/projects", "/projects", None).await;
    r.call("GET", "/projects/{id}", &p(""), None).await;
    let device = json!({
        "hostname": "spec-control-plane-0",
        "metro": "da",
        "plan": "c3.small.x86",
        "operating_system": "ubuntu_22_04",
        "billing_cycle": "hourly",
        "userdata": "#cloud-config\n",
        "tags": ["rackform:cluster=spec", "rackform:pool=control-plane", "rackform:ordinal=0", "rackform:spec=00ff"],
        "hardware_reservation_id": hardware_id,
        "ssh_keys": [{"label": "ops", "key": "ssh-ed25519 AAAA ops"}],
        "ipxe_script_url": "",
    });
    let created = r
        .call(
            "POST",
            "/projects/{id}/devices",
            &p("/devices"),
            Some(device),
        )
        .await
        .unwrap();
    let device_id = created["id"].as_str().unwrap().to_owned();
    let d = |suffix: &str| format!("/devices/{device_id}{suffix}");
    r.call("GET", "/devices/{id}", &d(""), None).await;
    sim.set_faults(Faults {
        stuck_provision: 1,
        ..Faults::default()
    });
    let stuck = json!({"hostname": "stuck", "facility": ["sv15"], "plan": "m3.large.x86",
        "operating_system": "debian_12", "no_ssh_keys": true, "customdata": {"a": 1}});
    let stuck = r
        .call(
            "POST",
            "/projects/{id}/devices",
            &p("/devices"),
            Some(stuck),
        )
        .await
        .unwrap();
    r.call(
        "GET",
        "/devices/{id}",
        &format!("/devices/{}", stuck["id"].as_str().unwrap()),
        None,
    )
    .await;
    r.call(
        "GET",
        "/projects/{id}/devices",
        &p("/devices?per_page=1&page=1"),
        None,
    )
    .await;
    r.call(
        "GET",
        "/projects/{id}/devices",
        &p("/devices?per_page=1&page=2&tag=x"),
        None,
    )
    .await;
    let reservation = r
        .call(
            "POST",
            "/projects/{id}/ips",
            &p("/ips"),
            Some(json!({"type": "public_ipv4", "quantity": 1, "metro": "da",
                "tags": ["rackform:endpoint=spec"], "fail_on_approval_required": true})),
        )
        .await
        .unwrap();
    let address = reservation["address"].as_str().unwrap().to_owned();
    let reservation_id = reservation["id"].as_str().unwrap().to_owned();
    let assignment = r
        .call(
            "POST",
            "/devices/{id}/ips",
            &d("/ips"),
            Some(json!({"address": address})),
        )
        .await
        .unwrap();
    let assignment_id = assignment["id"].as_str().unwrap().to_owned();
    r.call("GET", "/devices/{id}/ips", &d("/ips"), None).await;
    r.call(
        "POST",
        "/devices/{id}/actions",
        &d("/actions"),
        Some(json!({"type": "power_off"})),
    )
    .await;
    r.call(
        "POST",
        "/devices/{id}/actions",
        &d("/actions"),
        Some(json!({"type": "explode"})),
    )
    .await;
    r.call("GET", "/devices/{id}", &d(""), None).await;
    r.call("GET", "/projects/{id}/ips", &p("/ips"), None).await;
    r.call("GET", "/ips/{id}", &format!("/ips/{reservation_id}"), None)
        .await;
    r.call("GET", "/ips/{id}", &format!("/ips/{assignment_id}"), None)
        .await;
    r.call(
        "GET",
        "/projects/{id}/hardware-reservations",
        &p("/hardware-reservations"),
        None,
    )
    .await;
    r.call(
        "GET",
        "/hardware-reservations/{id}",
        &format!("/hardware-reservations/{hardware_id}"),
        None,
    )
    .await;
    r.call("GET", "/plans", "/plans", None).await;
    r.call("GET", "/operating-systems", "/operating-systems", None)
        .await;
    r.call("GET", "/locations/metros", "/locations/metros", None)
        .await;
    r.call("GET", "/facilities", "/facilities", None).await;
    let key = r
        .call(
            "POST",
            "/projects/{id}/ssh-keys",
            &p("/ssh-keys"),
            Some(json!({"label": "spec", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 spec@example", "tags": ["t"]})),
        )
        .await
        .unwrap();
    r.call("GET", "/projects/{id}/ssh-keys", &p("/ssh-keys"), None)
        .await;
    r.call(
        "POST",
        "/ssh-keys",
        "/ssh-keys",
        Some(json!({"label": "me", "key": "ssh-rsa AAAAB3NzaC1yc2E me@example"})),
    )
    .await;
    r.call(
        "POST",
        "/ssh-keys",
        "/ssh-keys",
        Some(json!({"label": "broken", "key": "not a key"})),
    )
    .await;
    r.call("GET", "/ssh-keys", "/ssh-keys?search=me", None)
        .await;
    let k = format!("/ssh-keys/{}", key["id"].as_str().unwrap());
    r.call("GET", "/ssh-keys/{id}", &k, None).await;
    r.call(
        "PUT",
        "/ssh-keys/{id}",
        &k,
        Some(json!({"label": "renamed"})),
    )
    .await;
    r.call("DELETE", "/ssh-keys/{id}", &k, None).await;
    r.call("GET", "/ssh-keys/{id}", &k, None).await;
    r.call("GET", "/user", "/user", None).await;
    r.call(
        "POST",
        "/projects/{id}/devices",
        &p("/devices"),
        Some(json!({"plan": "nope", "operating_system": "ubuntu_22_04", "metro": "da"})),
    )
    .await;
    r.call(
        "DELETE",
        "/ips/{id}",
        &format!("/ips/{assignment_id}"),
        None,
    )
    .await;
    r.call(
        "DELETE",
        "/ips/{id}",
        &format!("/ips/{reservation_id}"),
        None,
    )
    .await;
    r.call("DELETE", "/devices/{id}", &d(""), None).await;
    r.call("GET", "/devices/{id}", &d(""), None).await;
    r.call("DELETE", "/devices/{id}", &d(""), None).await;

    // Every exchange must be one the spec documents, with the documented body schema.
    let mut properties = Map::new();
    let mut instance = Map::new();
    let mut checked_bodies = 0;
    for recorded in &r.recorded {
        let operation = &spec["paths"][recorded.template][recorded.method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{}: the spec has no such operation",
            recorded.label
        );
        let response = &operation["responses"][recorded.status.to_string()];
        assert!(
            response.is_object(),
            "{}: status {} is not documented for {} {}",
            recorded.label,
            recorded.status,
            recorded.method,
            recorded.template
        );
        let schema = &response["content"]["application/json"]["schema"];
        match (&recorded.body, schema.is_object()) {
            (None, false) => {}
            (Some(body), true) => {
                properties.insert(recorded.label.clone(), json!({ "allOf": [schema] }));
                instance.insert(recorded.label.clone(), body.clone());
                checked_bodies += 1;
            }
            (body, _) => panic!("{}: body {body:?} but spec schema {schema}", recorded.label),
        }
    }
    assert!(checked_bodies >= 20, "{checked_bodies}");
    let mut components = spec["components"]["schemas"].clone();
    to_json_schema(&mut components);
    let mut properties = Value::Object(properties);
    to_json_schema(&mut properties);
    let required: Vec<&String> = instance.keys().collect();
    let document = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": properties,
        "required": required,
        "components": { "schemas": components },
    });
    let instance = Value::Object(instance);
    let output = run_checker(checker, &document, &instance);
    assert!(
        output.status.success(),
        "check-jsonschema found answers that break the spec:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Control: the same check must reject a device in an unknown state and a
    // reservation with a field the spec forbids.
    let mut broken = instance.clone();
    let device_label = r
        .recorded
        .iter()
        .find(|x| x.template == "/devices/{id}" && x.status == 200)
        .unwrap()
        .label
        .clone();
    broken[&device_label]["state"] = json!("exploded");
    let ip_label = r
        .recorded
        .iter()
        .find(|x| x.template == "/projects/{id}/ips" && x.method == "POST")
        .unwrap()
        .label
        .clone();
    broken[&ip_label]["bogus"] = json!(true);
    let output = run_checker(check_jsonschema().unwrap(), &document, &broken);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the control passed:\n{report}");
    assert!(
        report.contains("exploded") && report.contains("bogus"),
        "{report}"
    );
}

fn run_checker(mut checker: Command, document: &Value, instance: &Value) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
        path
    };
    let schema_path = write("schema.json", document);
    let instance_path = write("answers.json", instance);
    checker
        .arg("--schemafile")
        .arg(&schema_path)
        .arg(&instance_path)
        .output()
        .unwrap()
}

#[test]
fn nullable_becomes_a_null_type() {
    let mut schema = json!({
        "type": "object",
        "example": {"a": 1},
        "properties": {
            "a": {"type": "string", "nullable": true, "enum": ["x"]},
            "b": {"$ref": "#/components/schemas/B", "nullable": true},
        }
    });
    to_json_schema(&mut schema);
    assert_eq!(
        schema,
        json!({
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"], "enum": ["x", null]},
                "b": {"anyOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}]},
            }
        })
    );
}
