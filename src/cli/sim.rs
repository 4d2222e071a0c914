//! `rackform sim`: the Packet API simulator as a standalone server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use ipnet::Ipv4Net;

use crate::sim::machines::MachineConfig;
use crate::sim::{AddressPool, Faults, HardwareSeed, Sim, SimConfig};

/// Serve the Packet API simulator (paths under /metal/v1, admin under /_sim).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub listen: SocketAddr,
    /// Time from create to `active` (e.g. 500ms, 5s, 2m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub provision_delay: Duration,
    /// Time from delete to gone.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub deprovision_delay: Duration,
    /// Time from a reserved device gone to its hardware reservation provisionable again
    /// (Packet took about 4 minutes).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub reservation_release_delay: Duration,
    /// Block that device public IPv4 addresses and elastic IPs come from; without it, a /16 of
    /// 127.0.0.0/8 derived from --seed, or drawn at random when no seed is given (every
    /// loopback address is local on Linux, so they can be bound here).
    #[arg(long, value_name = "CIDR", value_parser = parse_pool)]
    pub address_pool: Option<Ipv4Net>,
    /// Seed for ids and injected errors (0 when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Project to create at start (repeatable).
    #[arg(long = "project", default_value = "rackform")]
    pub projects: Vec<String>,
    /// Hardware reservation for the first project, as [ID=]PLAN@FACILITY (repeatable).
    #[arg(long = "hardware-reservation", value_parser = parse_hardware)]
    pub hardware_reservations: Vec<HardwareSeed>,
    /// File holding the token clients must send; without it any non-empty token is accepted.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Keep state in this JSON file across restarts.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Latency added to every API answer.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// Share (0.0-1.0) of API requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Requests a second above which the API answers 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Retry-After seconds on 429/503 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// The next N created devices end `failed`.
    #[arg(long, default_value_t = 0)]
    pub fail_provision: u32,
    /// The next N created devices stay `provisioning`.
    #[arg(long, default_value_t = 0)]
    pub stuck_provision: u32,
    /// New devices are missing from lists for this long (GET /devices/{id} serves them).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub list_delay: Duration,
    /// From a node joining its cluster (and a network plugin running there) to the node
    /// Ready.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub node_ready: Duration,
    /// Failed devices answer 403 and vanish from lists.
    #[arg(long)]
    pub hide_failed: bool,
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses an IPv4 block with room for a device's /31.
fn parse_pool(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 block such as 127.77.0.0/16"))?;
    if net.prefix_len() > 30 {
        return Err(format!(
            "{net} is too small: give a block of /30 or larger, such as 127.77.0.0/16"
        ));
    }
    Ok(net.trunc())
}

fn parse_hardware(text: &str) -> Result<HardwareSeed, String> {
    let (id, rest) = match text.split_once('=') {
        Some((id, rest)) => (Some(id.to_owned()), rest),
        None => (None, text),
    };
    let (plan, facility) = rest
        .split_once('@')
        .ok_or_else(|| format!("{text:?} is not [ID=]PLAN@FACILITY, e.g. c3.small.x86@da11"))?;
    Ok(HardwareSeed {
        id,
        plan: plan.to_owned(),
        facility: facility.to_owned(),
    })
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let address_pool = match (args.address_pool, args.seed) {
        (Some(net), _) => AddressPool::Block(net),
        (None, Some(_)) => AddressPool::Seeded,
        (None, None) => AddressPool::Random,
    };
    let config = SimConfig {
        seed: args.seed.unwrap_or(0),
        provision_delay: args.provision_delay,
        deprovision_delay: args.deprovision_delay,
        reservation_release_delay: args.reservation_release_delay,
        address_pool,
        faults: Faults {
            latency_ms: args.latency.as_millis() as u64,
            error_rate: args.error_rate,
            rate_limit: args.rate_limit,
            retry_after_secs: args.retry_after,
            fail_provision: args.fail_provision,
            stuck_provision: args.stuck_provision,
            list_delay_ms: args.list_delay.as_millis() as u64,
            hide_failed: args.hide_failed,
            ..Faults::default()
        },
        token,
        projects: args.projects.clone(),
        hardware_reservations: args.hardware_reservations.clone(),
        state_file: args.state_file.clone(),
        machines: MachineConfig {
            node_ready: args.node_ready,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let sim = Sim::start(listener, config)
            .await
            .context("starting the simulator")?;
        println!("Packet API simulator listening on {}", sim.base_url());
        for name in &args.projects {
            if let Some(id) = sim.project_id(name) {
                println!("project {name}: {id}");
            }
        }
        println!("addresses: {}", sim.address_pool());
        println!(
            "admin: http://{}/_sim/requests, /_sim/faults, /_sim/devices",
            sim.addr()
        );
        stopped().await?;
        sim.shutdown().await.context("stopping the simulator")?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
async fn stopped() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn pools() {
        assert_eq!(
            parse_pool("127.77.3.9/16"),
            Ok("127.77.0.0/16".parse().unwrap())
        );
        assert!(
            parse_pool("127.77.0.0/31")
                .unwrap_err()
                .contains("too small")
        );
        assert!(parse_pool("fd00::/8").is_err());
    }
}
