//! The Packet client against the simulator, over real sockets on 127.0.0.1:0.

mod cli;
mod openapi;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackform::metal::{
    ClientConfig, Deleted, DeviceQuery, DeviceState, DeviceTags, IpKind, Location, Metal,
    NewDevice, NewIpReservation, PacketClient, Pool, ProjectId, RackformTags, RetryPolicy, Token,
    Userdata,
};
use rackform::sim::{Faults, HardwareSeed, Sim, SimConfig};

const TOKEN: &str = "tok-3f9a1c77e2d84b6a";
const DEVICES: &str = "GET /projects/{id}/devices";

pub async fn start_sim(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sim::start(listener, config).await.unwrap()
}

fn config_for(sim: &Sim) -> ClientConfig {
    let mut config = ClientConfig::new(Token::new(TOKEN));
    config.base_url = sim.base_url();
    config.jitter_seed = Some(1);
    config.requests_per_second = None;
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    config
}

fn client(sim: &Sim) -> PacketClient {
    PacketClient::new(config_for(sim)).unwrap()
}

fn project(sim: &Sim) -> ProjectId {
    ProjectId(sim.project_id("rackform").unwrap())
}

fn identity(cluster: &str, pool: Pool, ordinal: u32) -> RackformTags {
    RackformTags {
        cluster: cluster.into(),
        pool,
        ordinal,
        spec: "5e1f0c2a".into(),
    }
}

fn new_device(tags: &RackformTags, metro: &str) -> NewDevice {
    let mut new = NewDevice::new(
        tags.hostname(),
        Location::Metro(metro.into()),
        "c3.small.x86",
        "ubuntu_22_04",
    );
    new.tags = tags.to_tags();
    new.ssh_keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example".into()];
    new
}

/// Captures every tracing event of the current thread (tests run on a current-thread
/// runtime, so the simulator's tasks are captured too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

#[tokio::test]
async fn pagination_walks_every_page() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let seeded = sim
        .insert_devices(project.as_str(), 95, "c3.small.x86", "da", |_| Vec::new())
        .unwrap();
    let mut config = config_for(&sim);
    config.page_size = 10;
    let client = PacketClient::new(config).unwrap();
    let devices = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    let listed: Vec<String> = devices.iter().map(|d| d.id.to_string()).collect();
    assert_eq!(listed, seeded, "every device, once, in creation order");
    assert_eq!(sim.request_count(DEVICES), 10);
}

#[tokio::test]
async fn issue_4_listing_10000_devices_costs_one_request_per_page() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.insert_devices(project.as_str(), 10_000, "c3.small.x86", "da", |i| {
        identity("big", Pool::Worker("w".into()), i as u32).to_tags()
    })
    .unwrap();
    for page_size in [1000u32, 300] {
        sim.reset_requests();
        let mut config = config_for(&sim);
        config.page_size = page_size;
        let client = PacketClient::new(config).unwrap();
        let devices = client
            .list_devices(&project, &DeviceQuery::cluster("big"))
            .await
            .unwrap();
        assert_eq!(devices.len(), 10_000);
        let ordinals: BTreeSet<u32> = devices
            .iter()
            .filter_map(|d| d.rackform.managed().map(|t| t.ordinal))
            .collect();
        assert_eq!(ordinals.len(), 10_000);
        let pages = 10_000u64.div_ceil(u64::from(page_size));
        assert_eq!(sim.request_count(DEVICES), pages, "page size {page_size}");
        assert_eq!(sim.total_requests(), pages);
    }
}

#[tokio::test]
async fn tag_filter_selects_one_cluster_and_tags_parse() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.insert_devices(project.as_str(), 3, "c3.small.x86", "sv", |i| {
        identity("alpha", Pool::ControlPlane, i as u32).to_tags()
    })
    .unwrap();
    sim.insert_devices(project.as_str(), 2, "c3.small.x86", "sv", |i| {
        identity("beta", Pool::Worker("gpu".into()), i as u32).to_tags()
    })
    .unwrap();
    sim.insert_devices(project.as_str(), 1, "c3.small.x86", "sv", |_| {
        vec!["capp:cluster-id:other".into()]
    })
    .unwrap();
    sim.insert_devices(project.as_str(), 1, "c3.small.x86", "sv", |_| {
        vec!["rackform:cluster=alpha".into()]
    })
    .unwrap();
    let client = client(&sim);
    let alpha = client
        .list_devices(&project, &DeviceQuery::cluster("alpha"))
        .await
        .unwrap();
    assert_eq!(alpha.len(), 4);
    let managed: Vec<&RackformTags> = alpha.iter().filter_map(|d| d.rackform.managed()).collect();
    assert_eq!(managed.len(), 3);
    assert!(managed.iter().all(|t| t.pool == Pool::ControlPlane));
    assert!(
        alpha
            .iter()
            .any(|d| matches!(d.rackform, DeviceTags::Malformed { .. })
                && d.rackform.cluster() == Some("alpha")),
        "an incomplete tag set is malformed, not absent"
    );
    let beta = client
        .list_devices(&project, &DeviceQuery::cluster("beta"))
        .await
        .unwrap();
    assert_eq!(
        beta.iter().map(|d| d.rackform.clone()).collect::<Vec<_>>(),
        vec![
            DeviceTags::Managed(identity("beta", Pool::Worker("gpu".into()), 0)),
            DeviceTags::Managed(identity("beta", Pool::Worker("gpu".into()), 1)),
        ]
    );
    let all = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(
        all.iter()
            .filter(|d| d.rackform == DeviceTags::Unmanaged)
            .count(),
        1
    );
}

#[tokio::test]
async fn create_provision_delete_lifecycle() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let tags = identity("edge", Pool::ControlPlane, 0);
    let created = client
        .create_device(&project, &new_device(&tags, "da"))
        .await
        .unwrap();
    assert_eq!(created.state, DeviceState::Queued);
    assert_eq!(created.hostname, "edge-control-plane-0");
    assert_eq!(created.rackform, DeviceTags::Managed(tags.clone()));
    assert!(created.ip_addresses.is_empty());
    assert_eq!(created.facility, None);
    assert!(created.created_unix().is_some_and(|t| t > 1_700_000_000));

    // Provisioning delay is zero: by the next request the device is active.
    let active = client.get_device(&created.id).await.unwrap().unwrap();
    assert_eq!(active.state, DeviceState::Active);
    assert_eq!(active.facility.as_deref(), Some("da11"));
    assert_eq!(active.plan.as_deref(), Some("c3.small.x86"));
    assert_eq!(active.operating_system.as_deref(), Some("ubuntu_22_04"));
    assert_eq!(active.metro.as_deref(), Some("da"));
    assert!(active.access_ipv4().is_some());
    assert!(active.private_ipv4().unwrap().starts_with("10."));

    assert_eq!(
        client.delete_device(&created.id).await.unwrap(),
        Deleted::Now
    );
    assert_eq!(client.get_device(&created.id).await.unwrap(), None);
    assert_eq!(
        client.delete_device(&created.id).await.unwrap(),
        Deleted::AlreadyGone,
        "delete is idempotent"
    );
    assert_eq!(sim.request_count("DELETE /devices/{id}"), 2);
}

#[tokio::test]
async fn provisioning_faults_and_delete_refusal() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    sim.set_faults(Faults {
        stuck_provision: 1,
        fail_provision: 1,
        ..Faults::default()
    });
    let failed = client
        .create_device(
            &project,
            &new_device(&identity("f", Pool::ControlPlane, 0), "sv"),
        )
        .await
        .unwrap();
    let stuck = client
        .create_device(
            &project,
            &new_device(&identity("f", Pool::ControlPlane, 1), "sv"),
        )
        .await
        .unwrap();
    let fine = client
        .create_device(
            &project,
            &new_device(&identity("f", Pool::ControlPlane, 2), "sv"),
        )
        .await
        .unwrap();
    assert_eq!(state(&client, &failed.id).await, DeviceState::Failed);
    assert_eq!(state(&client, &stuck.id).await, DeviceState::Provisioning);
    assert_eq!(state(&client, &fine.id).await, DeviceState::Active);

    let error = client.delete_device(&stuck.id).await.unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert_eq!(
        error.messages(),
        ["Cannot delete a device while it is provisioning"]
    );
    assert_eq!(
        client.delete_device(&failed.id).await.unwrap(),
        Deleted::Now
    );

    // The 2018-2020 quirk: failed devices answer 403, which reads as gone.
    sim.set_faults(Faults {
        fail_provision: 1,
        ..Faults::default()
    });
    let hidden = client
        .create_device(
            &project,
            &new_device(&identity("f", Pool::ControlPlane, 3), "sv"),
        )
        .await
        .unwrap();
    sim.set_faults(Faults {
        hide_failed: true,
        ..Faults::default()
    });
    assert_eq!(client.get_device(&hidden.id).await.unwrap(), None);
    assert_eq!(
        sim.device_state(hidden.id.as_str()).as_deref(),
        Some("failed")
    );
    let listed = client
        .list_devices(&project, &DeviceQuery::cluster("f"))
        .await
        .unwrap();
    assert!(listed.iter().all(|d| d.id != hidden.id));
}

async fn state(client: &PacketClient, id: &rackform::metal::DeviceId) -> DeviceState {
    client.get_device(id).await.unwrap().unwrap().state
}

#[tokio::test]
async fn new_devices_can_be_missing_from_lists_for_a_while() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    sim.set_faults(Faults {
        list_delay_ms: 3_600_000,
        ..Faults::default()
    });
    let created = client
        .create_device(
            &project,
            &new_device(&identity("lag", Pool::ControlPlane, 0), "sv"),
        )
        .await
        .unwrap();
    let listed = client
        .list_devices(&project, &DeviceQuery::cluster("lag"))
        .await
        .unwrap();
    assert!(listed.is_empty(), "not yet visible in lists");
    assert!(client.get_device(&created.id).await.unwrap().is_some());
}

/// The journal of created devices completes a lagging list by reading its devices by id,
/// and lets go of an entry once the list shows the device or the API says it is gone.
#[tokio::test]
async fn the_journal_reads_by_id_what_the_list_does_not_show_yet() {
    use rackform::metal::{Created, Journal};

    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let journal = Journal::in_memory();
    let entry = |tags: &RackformTags, device: &str| Created {
        project: project.to_string(),
        cluster: tags.cluster.clone(),
        pool: tags.pool.to_string(),
        ordinal: tags.ordinal,
        hostname: tags.hostname(),
        device: device.to_owned(),
    };
    // Listed at once: the list shows it, so the entry goes.
    let shown = identity("seen", Pool::ControlPlane, 0);
    let created = client
        .create_device(&project, &new_device(&shown, "sv"))
        .await
        .unwrap();
    journal.record(entry(&shown, created.id.as_str())).unwrap();
    // Missing from lists for an hour.
    sim.set_faults(Faults {
        list_delay_ms: 3_600_000,
        ..Faults::default()
    });
    let lagging = identity("lag", Pool::ControlPlane, 0);
    let hidden = client
        .create_device(&project, &new_device(&lagging, "sv"))
        .await
        .unwrap();
    journal.record(entry(&lagging, hidden.id.as_str())).unwrap();
    // Gone (here: never existed): 404 by id.
    let ghost = identity("ghost", Pool::ControlPlane, 0);
    journal
        .record(entry(&ghost, "00000000-0000-4000-8000-000000000000"))
        .unwrap();

    // A look-up of one cluster reads only that cluster's entries.
    sim.reset_requests();
    let query = DeviceQuery::cluster("lag");
    let mut listed = client.list_devices(&project, &query).await.unwrap();
    assert!(listed.is_empty());
    journal
        .complete(&client, &project, &query, &mut listed)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&hidden.id]
    );
    assert_eq!(sim.request_count("GET /devices/{id}"), 1);
    assert_eq!(journal.entries().len(), 3, "nothing settled yet");

    // The whole project: the shown device's entry and the gone one's go.
    let mut listed = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    journal
        .complete(&client, &project, &DeviceQuery::all(), &mut listed)
        .await
        .unwrap();
    let mut ids: Vec<_> = listed.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let mut expected = vec![created.id.clone(), hidden.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        journal
            .entries()
            .iter()
            .map(|e| e.hostname.as_str())
            .collect::<Vec<_>>(),
        ["lag-control-plane-0"]
    );
}

#[tokio::test]
async fn validation_errors_surface_the_api_messages_without_retry() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let mut new = new_device(&identity("bad", Pool::ControlPlane, 0), "zz");
    new.plan = "x9.huge.x86".into();
    new.ssh_keys.clear();
    let error = client.create_device(&project, &new).await.unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert_eq!(
        error.messages(),
        [
            "x9.huge.x86 is not a valid plan",
            "zz is not a valid metro",
            "must have at least one SSH key or explicitly send no_ssh_keys option",
        ]
    );
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert!(
        chain.starts_with("creating device bad-control-plane-0 in project"),
        "{chain}"
    );
    assert!(
        chain.contains("the API answered 422: x9.huge.x86 is not a valid plan"),
        "{chain}"
    );
    assert_eq!(sim.request_count("POST /projects/{id}/devices"), 1);

    let mut wrong_arch = new_device(&identity("bad", Pool::ControlPlane, 1), "da");
    wrong_arch.plan = "c3.large.arm64".into();
    wrong_arch.operating_system = "windows_2022".into();
    let error = client
        .create_device(&project, &wrong_arch)
        .await
        .unwrap_err();
    assert_eq!(
        error.messages(),
        ["windows_2022 is not provisionable on c3.large.arm64"]
    );

    let unknown = client
        .list_devices(
            &ProjectId("00000000-0000-4000-8000-000000000000".into()),
            &DeviceQuery::all(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(404));
    assert_eq!(unknown.messages(), ["Not found"]);
}

#[tokio::test]
async fn retries_honour_retry_after_on_429_and_503() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.insert_devices(project.as_str(), 3, "c3.small.x86", "da", |_| Vec::new())
        .unwrap();
    let client = client(&sim);
    sim.set_faults(Faults {
        fail_next: [429, 503].into(),
        retry_after_secs: 1,
        ..Faults::default()
    });
    let devices = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(
        sim.request_count(DEVICES),
        3,
        "one 429, one 503, one success"
    );
    let logs = logs.text();
    let retries: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Retrying Packet API request"))
        .collect();
    assert_eq!(retries.len(), 2, "{logs}");
    for (line, status) in retries.iter().zip(["status=429", "status=503"]) {
        assert!(line.contains(status), "{line}");
        assert!(line.contains("server_wait_ms=1000"), "{line}");
        assert!(
            line.contains("wait_ms=1000"),
            "Retry-After is the wait: {line}"
        );
    }
}

#[tokio::test]
async fn creates_retry_on_503_but_not_on_500() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    sim.set_faults(Faults {
        fail_next: [503].into(),
        ..Faults::default()
    });
    client
        .create_device(
            &project,
            &new_device(&identity("r", Pool::ControlPlane, 0), "sv"),
        )
        .await
        .unwrap();
    assert_eq!(sim.request_count("POST /projects/{id}/devices"), 2);

    sim.set_faults(Faults {
        fail_next_at: [("POST /projects/{id}/devices".to_owned(), [500].into())].into(),
        ..Faults::default()
    });
    client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    let error = client
        .create_device(
            &project,
            &new_device(&identity("r", Pool::ControlPlane, 1), "sv"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(error.messages()[0].starts_with("Oh snap"));
    assert_eq!(
        sim.request_count("POST /projects/{id}/devices"),
        3,
        "a 500 on create may have created the device: no blind retry"
    );

    // Reads retry a 500 and give up after max_attempts, saying so.
    sim.set_faults(Faults {
        fail_next: [500, 502, 504, 500].into(),
        ..Faults::default()
    });
    let error = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(format!("{:#}", anyhow::Error::from(error)).contains("gave up after 4 attempts"));
}

#[tokio::test]
async fn rate_limit_headers_pace_the_client_below_429() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.insert_devices(project.as_str(), 30, "c3.small.x86", "da", |_| Vec::new())
        .unwrap();
    sim.set_faults(Faults {
        rate_limit: Some(5),
        ..Faults::default()
    });
    let mut config = config_for(&sim);
    config.page_size = 3;
    let client = PacketClient::new(config).unwrap();
    let devices = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    assert_eq!(devices.len(), 30);
    // X-RateLimit-Remaining: 0 makes the client wait for X-RateLimit-Reset, so a
    // sequential walk never meets a 429.
    assert_eq!(sim.request_count(DEVICES), 10);
    assert!(!logs.text().contains("Retrying"), "{}", logs.text());
}

#[tokio::test]
async fn token_never_appears_in_logs_errors_or_debug() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim(SimConfig {
        token: Some(TOKEN.into()),
        ..SimConfig::default()
    })
    .await;
    let project = project(&sim);
    let client = client(&sim);
    let mut new = new_device(&identity("s", Pool::ControlPlane, 0), "sv");
    new.userdata = Some(Userdata::new(
        "#cloud-config\n# join token: abcdef.0123456789abcdef\n",
    ));
    let device = client.create_device(&project, &new).await.unwrap();
    sim.set_faults(Faults {
        fail_next: [503, 422].into(),
        ..Faults::default()
    });
    let error = client.get_device(&device.id).await.unwrap_err();

    let mut wrong = config_for(&sim);
    wrong.token = Token::new("wrong-token-value-1234");
    let wrong = PacketClient::new(wrong).unwrap();
    let denied = wrong
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap_err();
    assert_eq!(denied.status(), Some(401));
    assert_eq!(denied.messages(), ["Invalid authentication token"]);

    let error_debug = format!("{error:?}");
    let shown = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{}\n{:#}\n{:#}",
        logs.text(),
        client,
        config_for(&sim),
        new,
        error_debug,
        anyhow::Error::from(error),
        anyhow::Error::from(denied),
    );
    assert!(
        shown.contains("Retrying Packet API request"),
        "logs were captured"
    );
    for secret in [TOKEN, "wrong-token-value-1234", "abcdef.0123456789abcdef"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
}

#[tokio::test]
async fn ip_reservation_assign_and_release() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let endpoint_tag = "rackform:endpoint=edge".to_owned();
    let reservation = client
        .reserve_ip(
            &project,
            &NewIpReservation {
                kind: IpKind::PublicIpv4,
                quantity: 1,
                metro: "da".into(),
                tags: vec![endpoint_tag.clone()],
                details: Some("control-plane endpoint of edge".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(reservation.cidr, 32);
    assert_eq!(reservation.state.as_deref(), Some("created"));
    assert_eq!(reservation.metro.as_deref(), Some("da"));
    let found = client
        .list_ip_reservations(&project, Some(&endpoint_tag))
        .await
        .unwrap();
    assert_eq!(found, vec![reservation.clone()]);
    assert!(
        client
            .list_ip_reservations(&project, Some("other"))
            .await
            .unwrap()
            .is_empty()
    );

    let device = client
        .create_device(
            &project,
            &new_device(&identity("edge", Pool::ControlPlane, 0), "da"),
        )
        .await
        .unwrap();
    let assignment = client
        .assign_ip(&device.id, &reservation.address)
        .await
        .unwrap();
    assert_eq!(assignment.device.as_ref(), Some(&device.id));
    assert_eq!(assignment.address, reservation.address);
    let again = client
        .assign_ip(&device.id, &reservation.address)
        .await
        .unwrap_err();
    assert_eq!(again.messages(), ["Address has already been taken"]);
    let device_now = client.get_device(&device.id).await.unwrap().unwrap();
    assert!(
        device_now
            .ip_addresses
            .iter()
            .any(|ip| ip.address == reservation.address)
    );
    let listed = client
        .list_ip_reservations(&project, Some(&endpoint_tag))
        .await
        .unwrap();
    assert_eq!(listed[0].assignments, vec![assignment.clone()]);

    assert_eq!(
        client.unassign_ip(&assignment.id).await.unwrap(),
        Deleted::Now
    );
    assert_eq!(
        client.unassign_ip(&assignment.id).await.unwrap(),
        Deleted::AlreadyGone
    );
    assert_eq!(
        client.release_ip(&reservation.id).await.unwrap(),
        Deleted::Now
    );
    assert_eq!(
        client.release_ip(&reservation.id).await.unwrap(),
        Deleted::AlreadyGone
    );
    assert!(
        client
            .list_ip_reservations(&project, None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn hardware_reservations_are_claimed_and_freed() {
    let sim = start_sim(SimConfig {
        hardware_reservations: vec![
            HardwareSeed {
                id: None,
                plan: "m3.large.x86".into(),
                facility: "da11".into(),
            },
            HardwareSeed {
                id: None,
                plan: "m3.large.x86".into(),
                facility: "da11".into(),
            },
        ],
        ..SimConfig::default()
    })
    .await;
    let project = project(&sim);
    let client = client(&sim);
    let reservations = client.list_hardware_reservations(&project).await.unwrap();
    assert_eq!(reservations.len(), 2);
    assert!(
        reservations
            .iter()
            .all(|r| r.provisionable && r.device.is_none())
    );

    let mut new = new_device(&identity("hw", Pool::Worker("big".into()), 0), "da");
    new.plan = "m3.large.x86".into();
    new.hardware_reservation_id = Some(reservations[1].id.to_string());
    let device = client.create_device(&project, &new).await.unwrap();
    assert_eq!(
        device.hardware_reservation.as_ref(),
        Some(&reservations[1].id)
    );
    let mut next = new.clone();
    next.hardware_reservation_id = Some("next-available".into());
    client.create_device(&project, &next).await.unwrap();
    let error = client.create_device(&project, &next).await.unwrap_err();
    assert_eq!(
        error.messages(),
        ["There are no available hardware reservations for m3.large.x86 in da"]
    );
    let taken = client.list_hardware_reservations(&project).await.unwrap();
    assert!(taken.iter().all(|r| !r.provisionable && r.device.is_some()));

    client.get_device(&device.id).await.unwrap();
    client.delete_device(&device.id).await.unwrap();
    let freed = client.list_hardware_reservations(&project).await.unwrap();
    assert_eq!(freed.iter().filter(|r| r.provisionable).count(), 1);
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sim.json");
    let config = SimConfig {
        state_file: Some(state_file.clone()),
        seed: 42,
        ..SimConfig::default()
    };
    let sim = start_sim(config.clone()).await;
    let project = project(&sim);
    let client = client(&sim);
    let device = client
        .create_device(
            &project,
            &new_device(&identity("keep", Pool::ControlPlane, 0), "ny"),
        )
        .await
        .unwrap();
    sim.shutdown().await.unwrap();

    let sim = start_sim(config).await;
    assert_eq!(sim.project_id("rackform").as_ref(), Some(&project.0));
    let client = self::client(&sim);
    let listed = client
        .list_devices(&project, &DeviceQuery::cluster("keep"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, device.id);
    assert_eq!(
        listed[0].state,
        DeviceState::Active,
        "provisioning resumed after restart"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_endpoints_count_requests_and_set_faults() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap();
    client.list_hardware_reservations(&project).await.unwrap();
    let http = reqwest::Client::new();
    let admin = format!("http://{}/_sim", sim.addr());
    let counts: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{admin}/requests"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        counts,
        serde_json::json!({
            "GET /projects/{id}/devices": 1,
            "GET /projects/{id}/hardware-reservations": 1,
        })
    );
    let response = http
        .put(format!("{admin}/faults"))
        .body(r#"{"fail_next": [404], "latency_ms": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sim.faults().fail_next, [404]);
    assert_eq!(sim.faults().latency_ms, 1);
    let bad = http
        .put(format!("{admin}/faults"))
        .body(r#"{"no_such_knob": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let error = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    let reset = http
        .delete(format!("{admin}/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(sim.total_requests(), 0);
}

#[tokio::test]
async fn requests_in_flight_stay_within_the_bound() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let ids = sim
        .insert_devices(project.as_str(), 12, "c3.small.x86", "da", |_| Vec::new())
        .unwrap();
    sim.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    let mut config = config_for(&sim);
    config.max_concurrent = 2;
    let client = Arc::new(PacketClient::new(config).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let client = client.clone();
        tasks.spawn(async move { client.get_device(&id.as_str().into()).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().unwrap().is_some());
    }
    assert_eq!(sim.request_count("GET /devices/{id}"), 12);
    assert!(sim.max_in_flight() <= 2, "{}", sim.max_in_flight());
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.set_faults(Faults {
        latency_ms: 30_000,
        ..Faults::default()
    });
    let mut config = config_for(&sim);
    config.timeout = Duration::from_millis(200);
    config.retry.max_attempts = 2;
    let client = PacketClient::new(config).unwrap();
    let error = client
        .list_devices(&project, &DeviceQuery::all())
        .await
        .unwrap_err();
    assert_eq!(error.status(), None);
    assert_eq!(
        error.disposition(),
        rackform::http::Disposition::Retry(Duration::from_secs(30))
    );
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert!(
        chain.contains("gave up after 2 attempts: sending the request"),
        "{chain}"
    );
    assert_eq!(sim.request_count(DEVICES), 2);
}

#[tokio::test]
async fn a_create_cut_off_mid_answer_is_found_by_the_next_list() {
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    sim.set_faults(Faults {
        truncate_next: 1,
        ..Faults::default()
    });
    let tags = identity("eof", Pool::ControlPlane, 0);
    let error = client
        .create_device(&project, &new_device(&tags, "sv"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), None, "{error:?}");
    assert_eq!(
        sim.request_count("POST /projects/{id}/devices"),
        1,
        "a create whose answer was lost is not blindly retried"
    );
    let found = client
        .list_devices(&project, &DeviceQuery::cluster("eof"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "observing before creating finds it");
    assert_eq!(found[0].rackform, DeviceTags::Managed(tags));
}

#[tokio::test]
async fn facility_based_creates_are_flagged_deprecated() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let mut new = new_device(&identity("old", Pool::ControlPlane, 0), "sv");
    new.location = Location::Facilities(vec!["sv15".into(), "any".into()]);
    let device = client.create_device(&project, &new).await.unwrap();
    assert_eq!(device.metro.as_deref(), Some("sv"));
    let logs = logs.text();
    assert!(
        logs.contains("Packet API marked this call deprecated")
            && logs.contains("Tue, 30 Jun 2026 00:00:00 GMT"),
        "{logs}"
    );
    let active = client.get_device(&device.id).await.unwrap().unwrap();
    assert_eq!(active.facility.as_deref(), Some("sv15"));
}

#[tokio::test]
async fn starts_on_a_std_listener_the_caller_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = Sim::start_std(listener, SimConfig::default())
        .await
        .unwrap();
    assert_eq!(sim.addr(), addr);
    let health = reqwest::get(format!("http://{addr}/_sim/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(health, "ok");
    let devices = client(&sim)
        .list_devices(&project(&sim), &DeviceQuery::all())
        .await
        .unwrap();
    assert!(devices.is_empty());
    sim.shutdown().await.unwrap();
}

/// An admin or API answer as JSON, through plain reqwest (for endpoints `PacketClient` does
/// not call).
async fn call(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = match path.strip_prefix("/_sim") {
        Some(_) => format!("http://{}{path}", sim.addr()),
        None => format!("{}{}", sim.base_url(), path.trim_start_matches('/')),
    };
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("X-Auth-Token", TOKEN);
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

const OPS_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGsk8uCGxa1f3iEUr4o4mbZSyX7d8ybG0GL3EY8wCvPc ops@example";
const DEV_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2RkqBHrhmG5G6Bf1MS4jA8Y8VHbjpDGuCCNWpiJ1DI dev@example";

/// The key ids a device answer lists (`ssh_keys` hrefs).
async fn device_key_ids(sim: &Sim, id: &rackform::metal::DeviceId) -> Vec<String> {
    let (status, device) = call(sim, reqwest::Method::GET, &format!("/devices/{id}"), None).await;
    assert_eq!(status, 200);
    device["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let href = k["href"].as_str().unwrap();
            href.strip_prefix("/metal/v1/ssh-keys/")
                .unwrap_or_else(|| panic!("href {href}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn ssh_keys_reach_new_devices_as_the_api_documents() {
    use reqwest::Method;
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    let mut bare = new_device(&identity("keys", Pool::ControlPlane, 0), "da");
    bare.ssh_keys.clear();

    // No key anywhere and none named: refused with the API's message.
    let error = client.create_device(&project, &bare).await.unwrap_err();
    assert_eq!(
        error.messages(),
        ["must have at least one SSH key or explicitly send no_ssh_keys option"]
    );

    let (status, ops) = call(
        &sim,
        Method::POST,
        &format!("/projects/{project}/ssh-keys"),
        Some(serde_json::json!({"label": "ops", "key": OPS_KEY, "tags": ["team"]})),
    )
    .await;
    assert_eq!(status, 201, "{ops}");
    assert_eq!(
        ops["entity"]["href"],
        format!("/metal/v1/projects/{project}")
    );
    assert_eq!(ops["fingerprint"].as_str().unwrap().split(':').count(), 16);
    let ops_id = ops["id"].as_str().unwrap().to_owned();
    let (status, user) = call(&sim, Method::GET, "/user", None).await;
    assert_eq!(status, 200);
    assert_eq!(user["id"], sim.user_id());
    let (status, dev) = call(
        &sim,
        Method::POST,
        "/ssh-keys",
        Some(serde_json::json!({"label": "dev", "key": DEV_KEY})),
    )
    .await;
    assert_eq!(status, 201, "{dev}");
    assert_eq!(
        dev["entity"]["href"],
        format!("/metal/v1/users/{}", sim.user_id())
    );
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    let (_, listed) = call(&sim, Method::GET, "/ssh-keys", None).await;
    assert_eq!(listed["ssh_keys"].as_array().unwrap().len(), 1);
    let (status, taken) = call(
        &sim,
        Method::POST,
        "/ssh-keys",
        Some(serde_json::json!({"label": "again", "key": DEV_KEY})),
    )
    .await;
    assert_eq!(
        (status, taken["errors"][0].as_str()),
        (422, Some("Key has already been taken"))
    );

    // None named: every project key and every member's key.
    let default = client.create_device(&project, &bare).await.unwrap();
    assert_eq!(
        device_key_ids(&sim, &default.id).await,
        [ops_id.clone(), dev_id.clone()]
    );
    // Named project keys: only those.
    let mut named = bare.clone();
    named.hostname = "keys-named".into();
    named.project_ssh_keys = vec![ops_id.clone()];
    let named = client.create_device(&project, &named).await.unwrap();
    assert_eq!(
        device_key_ids(&sim, &named.id).await,
        std::slice::from_ref(&ops_id)
    );
    // Inline keys (what rackform sends): a new project key, installed alone.
    let mut inline = bare.clone();
    inline.hostname = "keys-inline".into();
    inline.ssh_keys = vec![
        OPS_KEY.into(),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 new@example".into(),
    ];
    let inline = client.create_device(&project, &inline).await.unwrap();
    let (_, project_keys) = call(
        &sim,
        Method::GET,
        &format!("/projects/{project}/ssh-keys"),
        None,
    )
    .await;
    let project_keys: Vec<&str> = project_keys["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        project_keys.len(),
        2,
        "the known key is reused, the new one added"
    );
    assert_eq!(
        device_key_ids(&sim, &inline.id).await,
        [project_keys[0], project_keys[1]]
    );
    // no_ssh_keys: none.
    let mut none = bare.clone();
    none.hostname = "keys-none".into();
    none.no_ssh_keys = true;
    let none = client.create_device(&project, &none).await.unwrap();
    assert!(device_key_ids(&sim, &none.id).await.is_empty());

    // The machine layer reads what the device booted with; Debug shows no userdata.
    let mut with_userdata = bare.clone();
    with_userdata.hostname = "keys-userdata".into();
    with_userdata.userdata = Some(Userdata::new("#cloud-config\nsecret: tok-9f8e7d\n"));
    let booted = client
        .create_device(&project, &with_userdata)
        .await
        .unwrap();
    let boot = sim.device_boot(booted.id.as_str()).unwrap();
    assert_eq!(
        boot.userdata.expose(),
        b"#cloud-config\nsecret: tok-9f8e7d\n"
    );
    assert_eq!(
        boot.ssh_keys
            .iter()
            .map(|k| k.key.as_str())
            .collect::<Vec<_>>(),
        [
            OPS_KEY,
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 new@example",
            DEV_KEY
        ]
    );
    assert!(!format!("{boot:?}").contains("tok-9f8e7d"));
    assert!(sim.device_boot("no-such-device").is_none());

    // Key changes and deletes leave devices as they were created.
    let (status, renamed) = call(
        &sim,
        Method::PUT,
        &format!("/ssh-keys/{ops_id}"),
        Some(serde_json::json!({"label": "ops-renamed"})),
    )
    .await;
    assert_eq!(
        (status, renamed["label"].as_str()),
        (200, Some("ops-renamed"))
    );
    let (status, _) = call(&sim, Method::DELETE, &format!("/ssh-keys/{ops_id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&sim, Method::GET, &format!("/ssh-keys/{ops_id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(device_key_ids(&sim, &named.id).await, [ops_id]);
}

#[tokio::test]
async fn a_released_hardware_reservation_is_refused_until_the_delay_passes() {
    let delay = Duration::from_millis(400);
    let sim = start_sim(SimConfig {
        reservation_release_delay: delay,
        hardware_reservations: vec![HardwareSeed {
            id: None,
            plan: "m3.large.x86".into(),
            facility: "da11".into(),
        }],
        ..SimConfig::default()
    })
    .await;
    let project = project(&sim);
    let client = client(&sim);
    let reservation = client.list_hardware_reservations(&project).await.unwrap()[0]
        .id
        .clone();
    let mut new = new_device(&identity("hw", Pool::Worker("big".into()), 0), "da");
    new.plan = "m3.large.x86".into();
    new.hardware_reservation_id = Some(reservation.to_string());
    let first = client.create_device(&project, &new).await.unwrap();
    client.get_device(&first.id).await.unwrap();
    client.delete_device(&first.id).await.unwrap();
    let released = std::time::Instant::now();
    assert_eq!(client.get_device(&first.id).await.unwrap(), None, "gone");

    // Still being wiped: not provisionable, and a create on it is refused.
    let listed = client.list_hardware_reservations(&project).await.unwrap();
    assert!(!listed[0].provisionable && listed[0].device.is_none());
    let refused = client.create_device(&project, &new).await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.messages()),
        (Some(422), &["Server is not provisionable".to_owned()][..])
    );
    let mut next = new.clone();
    next.hardware_reservation_id = Some("next-available".into());
    let none = client.create_device(&project, &next).await.unwrap_err();
    assert_eq!(
        none.messages(),
        ["There are no available hardware reservations for m3.large.x86 in da"]
    );

    // Provisionable again after the delay, as a client polling it sees.
    while !client.list_hardware_reservations(&project).await.unwrap()[0].provisionable {
        assert!(released.elapsed() < delay * 20, "never provisionable again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released.elapsed() >= delay);
    let second = client.create_device(&project, &new).await.unwrap();
    assert_eq!(second.hardware_reservation.as_ref(), Some(&reservation));
}

#[tokio::test]
async fn addresses_come_from_a_loopback_pool_and_can_be_bound() {
    let sim = start_sim(SimConfig::default()).await;
    let other = start_sim(SimConfig::default()).await;
    let pool = sim.address_pool();
    let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().unwrap();
    assert!(
        loopback.contains(&pool) && pool.prefix_len() == 16,
        "{pool}"
    );
    assert_ne!(
        pool,
        other.address_pool(),
        "simulators started at once differ"
    );
    let project = project(&sim);
    let client = client(&sim);

    let reservation = client
        .reserve_ip(
            &project,
            &NewIpReservation {
                kind: IpKind::PublicIpv4,
                quantity: 1,
                metro: "da".into(),
                tags: vec!["rackform:endpoint=edge".into()],
                details: None,
            },
        )
        .await
        .unwrap();
    let eip: std::net::Ipv4Addr = reservation.address.parse().unwrap();
    assert!(pool.contains(&eip), "{eip} outside {pool}");
    let second = sim.create_project("second");
    let block = client
        .reserve_ip(
            &ProjectId(second),
            &NewIpReservation {
                kind: IpKind::PublicIpv4,
                quantity: 8,
                metro: "da".into(),
                tags: Vec::new(),
                details: None,
            },
        )
        .await
        .unwrap();
    let block: ipnet::Ipv4Net = format!("{}/{}", block.network, block.cidr).parse().unwrap();
    assert!(
        pool.contains(&block) && !block.contains(&eip),
        "{block} and {eip}"
    );

    let device = client
        .create_device(
            &project,
            &new_device(&identity("edge", Pool::ControlPlane, 0), "da"),
        )
        .await
        .unwrap();
    let assignment = client
        .assign_ip(&device.id, &reservation.address)
        .await
        .unwrap();
    let active = client.get_device(&device.id).await.unwrap().unwrap();
    let access: std::net::Ipv4Addr = active.access_ipv4().unwrap().parse().unwrap();
    assert!(pool.contains(&access), "{access} outside {pool}");

    // Both are local: listen on each, port 0, and connect.
    for address in [eip, access] {
        let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
        let bound = listener.local_addr().unwrap();
        assert_eq!(bound.ip(), address);
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(bound), listener.accept());
        connected.unwrap();
        accepted.unwrap();
    }

    // The admin view says what the machine will need of the device.
    let facts = sim.device_facts();
    assert_eq!(facts.len(), 1);
    let fact = &facts[0];
    assert_eq!(fact.id, device.id.as_str());
    assert_eq!(fact.state, "active");
    assert_eq!(fact.elastic_ips.len(), 1);
    assert_eq!(fact.elastic_ips[0].address, std::net::IpAddr::V4(eip));
    assert_eq!(fact.elastic_ips[0].assignment, assignment.id.as_str());
    assert!(
        fact.addresses
            .iter()
            .any(|a| a.address == std::net::IpAddr::V4(access))
    );
    assert_eq!(fact.ssh_keys.len(), 1);
    let (status, admin) = call(&sim, reqwest::Method::GET, "/_sim/devices", None).await;
    assert_eq!(status, 200);
    assert_eq!(admin, serde_json::to_value(&facts).unwrap());
    assert_eq!(admin[0]["elastic_ips"][0]["address"], eip.to_string());
    assert!(admin[0].get("userdata").is_none());
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_given_pool_or_seed_gives_the_same_addresses() {
    let block: ipnet::Ipv4Net = "127.201.4.0/24".parse().unwrap();
    let sim = start_sim(SimConfig {
        address_pool: rackform::sim::AddressPool::Block(block),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(sim.address_pool(), block);
    let seeded = |seed| SimConfig {
        seed,
        address_pool: rackform::sim::AddressPool::Seeded,
        ..SimConfig::default()
    };
    let a = start_sim(seeded(11)).await;
    let b = start_sim(seeded(11)).await;
    assert_eq!(a.address_pool(), b.address_pool());
    let reserve = |sim: &Sim| {
        let client = client(sim);
        let project = project(sim);
        async move {
            client
                .reserve_ip(
                    &project,
                    &NewIpReservation {
                        kind: IpKind::PublicIpv4,
                        quantity: 1,
                        metro: "da".into(),
                        tags: Vec::new(),
                        details: None,
                    },
                )
                .await
                .unwrap()
                .address
        }
    };
    let first = reserve(&sim).await;
    assert!(block.contains(&first.parse::<std::net::Ipv4Addr>().unwrap()));
    assert_eq!(reserve(&a).await, reserve(&b).await);
}

/// Issue 18: a cut-off answer ends its connection at once, so the client sees the early end
/// of file instead of waiting out its request timeout with half a body.
#[tokio::test]
async fn issue_18_a_cut_off_answer_ends_the_connection_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    sim.set_faults(Faults {
        truncate_next: 1,
        ..Faults::default()
    });
    let address = sim.addr().to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /metal/v1/projects/{project}/devices HTTP/1.1\r\nhost: {address}\r\nx-auth-token: {TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(body.len() < length, "{} of {length} bytes", body.len());
}

/// A call the API marks deprecated is said once per client, not once per request: the
/// demo's narrative and a daemon's log are not a wall of the same warning.
#[tokio::test]
async fn a_deprecated_call_is_reported_once() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim(SimConfig::default()).await;
    let project = project(&sim);
    let client = client(&sim);
    for n in 0..3 {
        let mut new = new_device(&identity("old", Pool::ControlPlane, n), "sv");
        new.location = Location::Facilities(vec!["sv15".into()]);
        client.create_device(&project, &new).await.unwrap();
    }
    let logs = logs.text();
    assert_eq!(
        logs.matches("Packet API marked this call deprecated")
            .count(),
        1,
        "{logs}"
    );
}
