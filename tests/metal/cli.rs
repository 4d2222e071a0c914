//! `rackform sim` as a process: it binds, prints where, and serves the client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rackform::metal::{DeviceQuery, Metal, PacketClient, ProjectId};

/// Kills the child on drop, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rackform_sim_serves_on_the_address_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_rackform"))
            .args(["sim", "--listen", "127.0.0.1:0", "--provision-delay", "0s"])
            .args(["--project", "fleet", "--seed", "7", "--state-file"])
            .arg(dir.path().join("state.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base_url = first
        .strip_prefix("Packet API simulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let second = lines.next().unwrap().unwrap();
    let project = second
        .strip_prefix("project fleet: ")
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
        .to_owned();

    let mut config = super::ClientConfig::new(super::Token::new("any"));
    config.base_url = base_url;
    let client = PacketClient::new(config).unwrap();
    let devices = client
        .list_devices(&ProjectId(project), &DeviceQuery::all())
        .await
        .unwrap();
    assert!(devices.is_empty());
    assert!(dir.path().join("state.json").exists());
}
