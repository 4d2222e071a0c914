//! The commands the simulated shell recognises, and what each does to the host.
//!
//! Owns `Shell::dispatch`. Commands with effects: `echo`, `printf`, `cat`, `tee`, `mkdir`,
//! `touch`, `rm`, `cp`, `mv`, `chmod`, `cd`, `test`/`[`, `set`, `export`, `unset`, `exit`,
//! `sh`/`bash`/`.` and scripts run by path, `apt-get`/`apt` (`update`, `install` with
//! `pkg=VERSION-*` pins), `sysctl`, `systemctl`, `ip addr|link`, `netplan apply`, `sed`
//! (literal `s///` only), `curl`/`wget`/`gpg` (no network: placeholders),
//! `containerd config default`, and `kubeadm` (see `kubeadm`).
//! Recognised as harmless and recorded as run: `swapoff`, `modprobe`, `apt-mark`, `chown`,
//! `sleep`, `hostnamectl`, `ip route`, `systemctl daemon-reload`.
//! Anything else is recorded as not interpreted and treated as succeeding; a binary that a
//! package provides (`kubeadm`, `kubectl`, `containerd`, `crictl`) is `command not found`
//! (status 127) until that package is installed.

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::{
    cluster::KubeVersion,
    host::{Host, InterfaceAddress, StepStatus},
    kubeadm,
    shell::{Exit, Out, Shell},
};

/// Packages only the Kubernetes project's repository (pkgs.k8s.io) ships.
const KUBE_PACKAGES: &[&str] = &[
    "kubelet",
    "kubeadm",
    "kubectl",
    "kubernetes-cni",
    "cri-tools",
];

/// Binaries a package provides, and the packages that provide them.
const PACKAGE_BINARIES: &[(&str, &[&str])] = &[
    ("kubeadm", &["kubeadm"]),
    ("kubelet", &["kubelet"]),
    ("kubectl", &["kubectl"]),
    ("crictl", &["cri-tools"]),
    ("containerd", &["containerd", "containerd.io"]),
    ("ctr", &["containerd", "containerd.io"]),
    ("docker", &["docker.io", "docker-ce"]),
];

/// Units a fresh server has, and the ones packages add.
const BASE_UNITS: &[&str] = &[
    "ssh",
    "sshd",
    "cron",
    "rsyslog",
    "systemd-networkd",
    "systemd-resolved",
    "systemd-sysctl",
    "systemd-modules-load",
];
const PACKAGE_UNITS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("containerd.io", "containerd"),
    ("kubelet", "kubelet"),
    ("docker.io", "docker"),
    ("docker-ce", "docker"),
];

impl Shell<'_> {
    pub(super) fn dispatch(
        &mut self,
        argv: &[String],
        stdin: &[u8],
        text: &str,
    ) -> Result<Out, Exit> {
        let name = argv[0].as_str();
        let args = &argv[1..];
        if let Some((_, packages)) = PACKAGE_BINARIES.iter().find(|(b, _)| *b == name)
            && !packages.iter().any(|p| self.host.package(p).is_some())
        {
            let out = Out::fail(127, format!("{name}: command not found"));
            if name == "kubeadm" {
                self.attempt(text, Err(format!("{name}: command not found")));
            }
            return Ok(out);
        }
        if name.contains('/') {
            return Ok(self.run_path(name));
        }
        Ok(match name {
            "true" | ":" => Out::ok(),
            "false" => Out::fail(1, "false"),
            "echo" => Out::stdout(echo(args).into_bytes()),
            "printf" => match args.split_first() {
                Some((format, rest)) => Out::stdout(printf(format, rest).into_bytes()),
                None => Out::fail(2, "printf: usage: printf format [arg ...]"),
            },
            "cat" => self.cat(args, stdin),
            "tee" => self.tee(args, stdin),
            "mkdir" => self.mkdir(args),
            "touch" => self.touch(args),
            "rm" => self.rm(args),
            "cp" | "mv" => self.copy(name, args),
            "chmod" => self.chmod(args),
            "chown" | "chgrp" | "apt-mark" | "swapoff" | "modprobe" | "sync" | "wait" => Out::ok(),
            "sleep" => Out::note("no time passes in the simulator"),
            "hostnamectl" | "hostname" => Out::note("the hostname is the device's; not changed"),
            "cd" => self.cd(args),
            "test" => Out::status(test(self, args)),
            "[" => match args.split_last() {
                Some((last, rest)) if last == "]" => Out::status(test(self, rest)),
                _ => Out::fail(2, "[: missing ]"),
            },
            "set" => self.set(args),
            "export" => {
                for arg in args {
                    if let Some((k, v)) = arg.split_once('=') {
                        self.env.insert(k.to_owned(), v.to_owned());
                    }
                }
                Out::ok()
            }
            "unset" => {
                for arg in args {
                    self.env.remove(arg);
                }
                Out::ok()
            }
            "exit" => {
                let status = args.first().and_then(|s| s.parse().ok()).unwrap_or(self.last);
                let stage = self.stage.clone();
                self.host.record(&stage, text, StepStatus::Ran { note: None });
                return Err(Exit(status));
            }
            "sh" | "bash" | "dash" => self.sh(name, args, stdin),
            "." | "source" => self.source(args),
            "sudo" | "env" | "nohup" | "timeout" => return self.wrapper(name, args, stdin, text),
            "apt-get" | "apt" => self.apt(args),
            "sysctl" => self.sysctl(args),
            "systemctl" => self.systemctl(args),
            "ip" => self.ip(args),
            "netplan" => self.netplan(args),
            "sed" => self.sed(args, stdin),
            "curl" | "wget" => self.download(name, args),
            "gpg" => self.gpg(args, stdin),
            "containerd" if args.first().map(String::as_str) == Some("config") => Out {
                stdout: b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = false\n".to_vec(),
                ..Out::note("prints a placeholder for the default configuration")
            },
            "kubeadm" => {
                let result = kubeadm::run(self, args);
                self.attempt(text, result.clone());
                match result {
                    Ok(outcome) => Out::note(outcome.to_string()),
                    Err(reason) => Out::fail(1, reason),
                }
            }
            _ => Out::not_interpreted("not a command the simulator knows; treated as succeeding"),
        })
    }

    fn attempt(&mut self, text: &str, result: Result<super::Outcome, String>) {
        let step = super::host::redact(&format!("{}: {}", self.stage, text));
        let result = result.map_err(|reason| super::host::redact(&reason));
        self.host
            .attempts
            .push(super::host::Attempt { step, result });
    }

    fn run_path(&mut self, path: &str) -> Out {
        let path = self.path(path);
        let Some(file) = self.host.file(&path) else {
            return Out::fail(127, format!("{path}: not found"));
        };
        if file.mode & 0o111 == 0 {
            return Out::fail(126, format!("{path}: permission denied"));
        }
        let Some(source) = file.text().map(str::to_owned) else {
            return Out::not_interpreted("a binary program");
        };
        let first = source.lines().next().unwrap_or_default();
        let shell = match first.strip_prefix("#!") {
            None => true,
            Some(line) => {
                let line = line.trim();
                [
                    "/bin/sh",
                    "/bin/bash",
                    "/bin/dash",
                    "/usr/bin/env bash",
                    "/usr/bin/env sh",
                    "/usr/bin/bash",
                ]
                .iter()
                .any(|s| line == *s || line.starts_with(&format!("{s} ")))
            }
        };
        if !shell {
            return Out::not_interpreted(format!("interpreter {first:?} is not simulated"));
        }
        let status = self.child(&path, &source, false, false);
        exit_out(status, &path)
    }

    fn sh(&mut self, name: &str, args: &[String], stdin: &[u8]) -> Out {
        let (mut errexit, mut nounset) = (false, false);
        let mut rest = args;
        while let Some((flag, tail)) = rest.split_first() {
            if flag == "-c" {
                let Some(script) = tail.first() else {
                    return Out::fail(2, format!("{name}: -c requires an argument"));
                };
                let stage = format!("{name} -c");
                let status = self.child(&stage, script, errexit, nounset);
                return exit_out(status, &stage);
            }
            if flag == "-o" {
                rest = tail.get(1..).unwrap_or_default();
                continue;
            }
            if let Some(letters) = flag.strip_prefix('-').filter(|l| !l.is_empty()) {
                errexit |= letters.contains('e');
                nounset |= letters.contains('u');
                rest = tail;
                continue;
            }
            break;
        }
        let source = match rest.first() {
            Some(file) => {
                let path = self.path(file);
                match self.host.file(&path).and_then(|f| f.text()) {
                    Some(text) => text.to_owned(),
                    None => {
                        return Out::fail(
                            127,
                            format!("{name}: 0: cannot open {file}: no such file"),
                        );
                    }
                }
            }
            None => String::from_utf8_lossy(stdin).into_owned(),
        };
        let stage = format!("{name} {}", rest.first().map_or("(stdin)", String::as_str));
        let status = self.child(&stage, &source, errexit, nounset);
        exit_out(status, &stage)
    }

    fn source(&mut self, args: &[String]) -> Out {
        let Some(file) = args.first() else {
            return Out::fail(2, ".: filename argument required");
        };
        let path = self.path(file);
        let Some(source) = self
            .host
            .file(&path)
            .and_then(|f| f.text())
            .map(str::to_owned)
        else {
            return Out::fail(2, format!(".: cannot open {path}"));
        };
        let stage = format!(". {path}");
        let status = self.child(&stage, &source, self.errexit, self.nounset);
        exit_out(status, &stage)
    }

    fn wrapper(
        &mut self,
        name: &str,
        args: &[String],
        stdin: &[u8],
        text: &str,
    ) -> Result<Out, Exit> {
        let mut rest = args;
        if name == "timeout" {
            rest = rest.get(1..).unwrap_or_default();
        }
        while let Some((first, tail)) = rest.split_first() {
            if first.starts_with('-') {
                rest = tail;
            } else if name == "env" && first.contains('=') {
                let (k, v) = first.split_once('=').expect("checked");
                self.env.insert(k.to_owned(), v.to_owned());
                rest = tail;
            } else {
                break;
            }
        }
        if rest.is_empty() {
            return Ok(Out::ok());
        }
        self.dispatch(rest, stdin, text)
    }

    fn cat(&mut self, args: &[String], stdin: &[u8]) -> Out {
        let files: Vec<&String> = args
            .iter()
            .filter(|a| !a.starts_with('-') || *a == "-")
            .collect();
        if files.is_empty() {
            return Out::stdout(stdin.to_vec());
        }
        let mut out = Vec::new();
        for file in files {
            if file == "-" {
                out.extend_from_slice(stdin);
                continue;
            }
            match self.host.file(&self.path(file)) {
                Some(f) => out.extend_from_slice(&f.data),
                None => return Out::fail(1, format!("cat: {file}: no such file or directory")),
            }
        }
        Out::stdout(out)
    }

    fn tee(&mut self, args: &[String], stdin: &[u8]) -> Out {
        let append = args.iter().any(|a| a == "-a" || a == "--append");
        for file in args.iter().filter(|a| !a.starts_with('-')) {
            let path = self.path(file);
            if let Err(reason) = self.host.redirect(&path, stdin, append) {
                return Out::fail(1, format!("tee: {reason}"));
            }
        }
        Out::stdout(stdin.to_vec())
    }

    fn mkdir(&mut self, args: &[String]) -> Out {
        let parents = args.iter().any(|a| a.starts_with('-') && a.contains('p'));
        let mut skip_next = false;
        for arg in args {
            if skip_next {
                skip_next = false;
                continue;
            }
            if arg == "-m" {
                skip_next = true;
                continue;
            }
            if arg.starts_with('-') {
                continue;
            }
            let path = self.path(arg);
            if parents {
                self.host.mkdir_p(&path);
            } else if let Err(reason) = self.host.mkdir(&path) {
                return Out::fail(1, format!("mkdir: {reason}"));
            }
        }
        Out::ok()
    }

    fn touch(&mut self, args: &[String]) -> Out {
        for arg in args.iter().filter(|a| !a.starts_with('-')) {
            let path = self.path(arg);
            if self.host.file(&path).is_none()
                && let Err(reason) = self.host.redirect(&path, b"", true)
            {
                return Out::fail(1, format!("touch: {reason}"));
            }
        }
        Out::ok()
    }

    fn rm(&mut self, args: &[String]) -> Out {
        let force = args.iter().any(|a| a.starts_with('-') && a.contains('f'));
        for arg in args.iter().filter(|a| !a.starts_with('-')) {
            let path = self.path(arg);
            if !self.host.remove(&path) && !force && !self.host.is_dir(&path) {
                return Out::fail(
                    1,
                    format!("rm: cannot remove '{arg}': no such file or directory"),
                );
            }
        }
        Out::ok()
    }

    fn copy(&mut self, name: &str, args: &[String]) -> Out {
        let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let [from, to] = paths.as_slice() else {
            return Out::not_interpreted(format!(
                "{name} with other than one source and one target"
            ));
        };
        let from = self.path(from);
        let Some(file) = self.host.file(&from).cloned() else {
            return Out::fail(
                1,
                format!("{name}: cannot stat '{from}': no such file or directory"),
            );
        };
        let mut to = self.path(to);
        if self.host.is_dir(&to) {
            to = format!("{to}/{}", from.rsplit('/').next().unwrap_or_default());
        }
        if let Err(reason) = self.host.redirect(&to, &file.data, false) {
            return Out::fail(1, format!("{name}: {reason}"));
        }
        self.host.chmod(&to, file.mode);
        if name == "mv" {
            self.host.remove(&from);
        }
        Out::ok()
    }

    fn chmod(&mut self, args: &[String]) -> Out {
        let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with("-R")).collect();
        let Some((mode, files)) = rest.split_first() else {
            return Out::fail(1, "chmod: missing operand");
        };
        for file in files {
            let path = self.path(file);
            let Some(current) = self.host.file(&path).map(|f| f.mode) else {
                return Out::fail(
                    1,
                    format!("chmod: cannot access '{file}': no such file or directory"),
                );
            };
            let Some(new) = parse_mode(mode, current) else {
                return Out::not_interpreted(format!("chmod mode {mode:?}"));
            };
            self.host.chmod(&path, new);
        }
        Out::ok()
    }

    fn cd(&mut self, args: &[String]) -> Out {
        let target = args.first().cloned().unwrap_or_else(|| "/root".to_owned());
        let path = self.path(&target);
        if !self.host.is_dir(&path) {
            return Out::fail(2, format!("cd: can't cd to {target}"));
        }
        self.cwd = path;
        Out::ok()
    }

    fn set(&mut self, args: &[String]) -> Out {
        let mut note = None;
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            let on = arg.starts_with('-');
            let Some(letters) = arg.strip_prefix(['-', '+']) else {
                continue;
            };
            for letter in letters.chars() {
                match letter {
                    'e' => self.errexit = on,
                    'u' => self.nounset = on,
                    'o' => match iter.next().map(String::as_str) {
                        Some("errexit") => self.errexit = on,
                        Some("nounset") => self.nounset = on,
                        Some(other) => note = Some(format!("option {other} is not modelled")),
                        None => {}
                    },
                    _ => {}
                }
            }
        }
        match note {
            Some(note) => Out::note(note),
            None => Out::ok(),
        }
    }

    fn apt(&mut self, args: &[String]) -> Out {
        let mut words = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "-o" || arg == "-t" {
                iter.next();
            } else if !arg.starts_with('-') {
                words.push(arg.as_str());
            }
        }
        match words.split_first() {
            Some((&"update", _)) => self.apt_update(),
            Some((&"install", packages)) => self.apt_install(packages),
            Some((other, _))
                if [
                    "upgrade",
                    "dist-upgrade",
                    "clean",
                    "autoremove",
                    "autoclean",
                ]
                .contains(other) =>
            {
                Out::note("no package changes are modelled")
            }
            Some((other, _)) => Out::not_interpreted(format!("apt-get {other}")),
            None => Out::fail(100, "e: invalid operation"),
        }
    }

    /// Reads the sources apt would read and remembers the Kubernetes repositories.
    fn apt_update(&mut self) -> Out {
        let mut lists = vec!["/etc/apt/sources.list".to_owned()];
        lists.extend(
            self.host
                .files_in("/etc/apt/sources.list.d")
                .into_iter()
                .filter(|p| p.ends_with(".list") || p.ends_with(".sources")),
        );
        let mut repos = BTreeSet::new();
        for list in lists {
            let Some(text) = self
                .host
                .file(&list)
                .and_then(|f| f.text())
                .map(str::to_owned)
            else {
                continue;
            };
            for source in apt_sources(&text) {
                if source.uri.contains("apt.kubernetes.io")
                    || source.uri.contains("packages.cloud.google.com/apt")
                {
                    return Out::fail(
                        100,
                        format!(
                            "e: the repository '{}' does not have a release file (the legacy kubernetes repositories are gone)",
                            source.uri
                        ),
                    );
                }
                let Some(minor) = kube_repo_minor(&source.uri) else {
                    continue;
                };
                let signed = match &source.signed_by {
                    Some(keyring) => self.host.file(keyring).is_some(),
                    None => {
                        !self.host.files_in("/etc/apt/trusted.gpg.d").is_empty()
                            || self.host.file("/etc/apt/trusted.gpg").is_some()
                    }
                };
                if !signed {
                    return Out::fail(
                        100,
                        format!(
                            "e: the repository '{}' is not signed (no keyring for it)",
                            source.uri
                        ),
                    );
                }
                repos.insert(minor);
            }
        }
        self.host.apt.kube_repos = repos;
        self.host.apt.updated = true;
        Out::ok()
    }

    fn apt_install(&mut self, packages: &[&str]) -> Out {
        let mut chosen = Vec::new();
        let mut notes = Vec::new();
        for spec in packages {
            let (name, pin) = match spec.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (*spec, None),
            };
            if !KUBE_PACKAGES.contains(&name) {
                chosen.push((name.to_owned(), pin.unwrap_or("distribution").to_owned()));
                continue;
            }
            let repos = &self.host.apt.kube_repos;
            let Some(newest) = repos.iter().next_back().copied() else {
                return Out::fail(100, format!("e: unable to locate package {name}"));
            };
            let version = match pin {
                None => {
                    notes.push(format!("{name} unpinned: installed v1.{newest}.0, the simulator does not know the newest patch"));
                    KubeVersion::new(1, newest, 0)
                }
                Some(pin) => {
                    let wanted = pin.trim_end_matches('*').trim_end_matches('-');
                    let mut parts = wanted.split('.');
                    let minor = parts.nth(1).and_then(|m| m.parse::<u32>().ok());
                    let patch = parts
                        .next()
                        .and_then(|p| p.split('-').next()?.parse::<u32>().ok());
                    match minor.filter(|m| repos.contains(m) && wanted.starts_with("1.")) {
                        Some(minor) => {
                            let patch = patch.unwrap_or_else(|| {
                                notes.push(format!("{name}={pin}: the simulator takes patch 0"));
                                0
                            });
                            KubeVersion::new(1, minor, patch)
                        }
                        None => {
                            return Out::fail(
                                100,
                                format!("e: version '{pin}' for '{name}' was not found"),
                            );
                        }
                    }
                }
            };
            let plain = version.to_string();
            chosen.push((name.to_owned(), plain.trim_start_matches('v').to_owned()));
        }
        for (name, version) in chosen {
            self.host.install(&name, &version);
            if let Some((_, unit)) = PACKAGE_UNITS.iter().find(|(p, _)| *p == name) {
                self.host.start_service(unit);
            }
        }
        if notes.is_empty() {
            Out::ok()
        } else {
            Out::note(notes.join("; "))
        }
    }

    fn sysctl(&mut self, args: &[String]) -> Out {
        let mut files = Vec::new();
        let mut sets = Vec::new();
        let mut reads = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--system" => {
                    let mut conf = self.host.files_in("/etc/sysctl.d");
                    conf.retain(|p| p.ends_with(".conf"));
                    conf.push("/etc/sysctl.conf".to_owned());
                    files.extend(conf);
                }
                "-p" | "--load" => files.push(
                    iter.next()
                        .cloned()
                        .unwrap_or_else(|| "/etc/sysctl.conf".to_owned()),
                ),
                "-w" | "-q" | "-n" | "-e" => {}
                other if other.contains('=') => sets.push(other.to_owned()),
                other if !other.starts_with('-') => reads.push(other.to_owned()),
                _ => {}
            }
        }
        for file in files {
            let Some(text) = self
                .host
                .file(&file)
                .and_then(|f| f.text())
                .map(str::to_owned)
            else {
                continue;
            };
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                sets.push(line.trim_start_matches('-').to_owned());
            }
        }
        for set in sets {
            if let Some((k, v)) = set.split_once('=') {
                self.host.set_sysctl(k.trim(), v.trim());
            }
        }
        let mut out = String::new();
        for key in reads {
            match self.host.sysctl(&key) {
                Some(v) => out.push_str(&format!("{key} = {v}\n")),
                None => {
                    return Out::fail(
                        255,
                        format!(
                            "sysctl: cannot stat /proc/sys/{}: no such file or directory",
                            key.replace('.', "/")
                        ),
                    );
                }
            }
        }
        Out::stdout(out.into_bytes())
    }

    fn systemctl(&mut self, args: &[String]) -> Out {
        let words: Vec<&str> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .map(String::as_str)
            .collect();
        let Some((verb, units)) = words.split_first() else {
            return Out::not_interpreted("systemctl without a verb");
        };
        match *verb {
            "daemon-reload" | "daemon-reexec" => Out::ok(),
            "enable" | "start" | "restart" | "reload" | "reload-or-restart" | "try-restart" => {
                for unit in units {
                    let unit = unit.trim_end_matches(".service");
                    let known = BASE_UNITS.contains(&unit)
                        || PACKAGE_UNITS
                            .iter()
                            .any(|(p, u)| *u == unit && self.host.package(p).is_some());
                    if !known {
                        return match *verb {
                            "enable" => Out::fail(
                                1,
                                format!(
                                    "failed to enable unit: unit file {unit}.service does not exist"
                                ),
                            ),
                            v => Out::fail(
                                5,
                                format!(
                                    "failed to {v} {unit}.service: unit {unit}.service not found"
                                ),
                            ),
                        };
                    }
                    self.host.start_service(unit);
                }
                Out::ok()
            }
            "stop" | "disable" | "mask" | "status" | "is-active" | "is-enabled" => {
                Out::note("service state changes other than starting are not modelled")
            }
            other => Out::not_interpreted(format!("systemctl {other}")),
        }
    }

    fn ip(&mut self, args: &[String]) -> Out {
        let words: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .skip_while(|a| a.starts_with('-'))
            .collect();
        let Some((object, rest)) = words.split_first() else {
            return Out::fail(255, "usage: ip [ options ] object { command | help }");
        };
        match *object {
            "a" | "ad" | "add" | "addr" | "address" => self.ip_addr(rest),
            "l" | "li" | "lin" | "link" => match rest {
                ["add", name, "type", "dummy", ..] | ["add", "name", name, "type", "dummy", ..] => {
                    self.host.ensure_interface(name);
                    Out::ok()
                }
                ["set", ..] | ["show", ..] | [] => Out::note("link state is not modelled"),
                _ => Out::not_interpreted(format!("ip link {}", rest.join(" "))),
            },
            "r" | "ro" | "rou" | "route" | "rule" | "neigh" => {
                Out::note("routes are not simulated")
            }
            other => Out::not_interpreted(format!("ip {other}")),
        }
    }

    fn ip_addr(&mut self, rest: &[&str]) -> Out {
        match rest.split_first() {
            Some((&("add" | "a" | "replace"), args)) => {
                let mut address = None;
                let mut device = None;
                let mut i = 0;
                while i < args.len() {
                    match args[i] {
                        "dev" => {
                            device = args.get(i + 1).copied();
                            i += 2;
                        }
                        "broadcast" | "brd" | "label" | "scope" | "valid_lft" | "preferred_lft"
                        | "peer" => i += 2,
                        "local" => {
                            address = args.get(i + 1).copied();
                            i += 2;
                        }
                        word => {
                            address.get_or_insert(word);
                            i += 1;
                        }
                    }
                }
                let Some(device) = device else {
                    return Out::fail(1, "not enough information: \"dev\" argument is required");
                };
                let Some(address) = address else {
                    return Out::fail(1, "not enough information: an address is required");
                };
                let address: InterfaceAddress = match address.parse() {
                    Ok(a) => a,
                    Err(e) => {
                        return Out::fail(1, format!("error: any valid prefix is expected: {e}"));
                    }
                };
                match self.host.add_address(device, address) {
                    Ok(()) => Out::ok(),
                    Err(e) if rest[0] == "replace" && e.contains("exists") => Out::ok(),
                    Err(e) if e.starts_with("cannot find") => Out::fail(1, e),
                    Err(e) => Out::fail(2, e),
                }
            }
            Some((&("show" | "list" | "s" | "ls"), _)) | None => {
                let mut out = String::new();
                for (name, addresses) in self.host.interfaces() {
                    for a in addresses {
                        out.push_str(&format!("{name} {a}\n"));
                    }
                }
                Out::stdout(out.into_bytes())
            }
            Some((other, _)) => Out::not_interpreted(format!("ip addr {other}")),
        }
    }

    /// `netplan apply`: every address in `/etc/netplan/*.yaml` goes on its interface.
    fn netplan(&mut self, args: &[String]) -> Out {
        match args.first().map(String::as_str) {
            Some("apply") => {}
            Some("generate" | "get" | "info") => return Out::note("nothing applied"),
            other => return Out::not_interpreted(format!("netplan {}", other.unwrap_or(""))),
        }
        match apply_netplan(self.host) {
            Ok(notes) if notes.is_empty() => Out::ok(),
            Ok(notes) => Out::note(notes.join("; ")),
            Err(error) => Out::fail(1, error),
        }
    }

    fn sed(&mut self, args: &[String], stdin: &[u8]) -> Out {
        let mut in_place = false;
        let mut script = None;
        let mut files = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg.starts_with("-i") || arg == "--in-place" {
                in_place = true;
            } else if arg == "-e" {
                script = iter.next().cloned();
            } else if arg.starts_with('-') {
            } else if script.is_none() {
                script = Some(arg.clone());
            } else {
                files.push(arg.clone());
            }
        }
        let Some(script) = script else {
            return Out::fail(1, "sed: no script specified");
        };
        let substitute = literal_substitution(&script);
        let apply = |data: &[u8]| -> Vec<u8> {
            match (&substitute, std::str::from_utf8(data)) {
                (Some((from, to, global)), Ok(text)) => {
                    let mut out = String::new();
                    for line in text.split_inclusive('\n') {
                        if *global {
                            out.push_str(&line.replace(from.as_str(), to));
                        } else {
                            out.push_str(&line.replacen(from.as_str(), to, 1));
                        }
                    }
                    out.into_bytes()
                }
                _ => data.to_vec(),
            }
        };
        let note = substitute
            .is_none()
            .then(|| format!("sed script {script:?} not applied: only literal s/// is simulated"));
        if files.is_empty() {
            return Out {
                stdout: apply(stdin),
                step: StepStatus::Ran { note },
                ..Out::ok()
            };
        }
        let mut out = Vec::new();
        for file in files {
            let path = self.path(&file);
            let Some(data) = self.host.file(&path).map(|f| f.data.clone()) else {
                return Out::fail(
                    2,
                    format!("sed: can't read {file}: no such file or directory"),
                );
            };
            if in_place {
                let changed = apply(&data);
                let _ = self.host.redirect(&path, &changed, false);
            } else {
                out.extend(apply(&data));
            }
        }
        Out {
            stdout: out,
            step: StepStatus::Ran { note },
            ..Out::ok()
        }
    }

    fn download(&mut self, name: &str, args: &[String]) -> Out {
        let mut output = None;
        let mut url = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "-o" | "--output" | "-O" if name == "curl" && arg != "-O" => {
                    output = iter.next().cloned()
                }
                "-O" if name == "wget" => output = iter.next().cloned(),
                "-qO-" | "-O-" => output = None,
                "-H" | "--header" | "-d" | "--data" | "-X" | "-u" | "--retry" | "-w"
                | "--connect-timeout" => {
                    iter.next();
                }
                a if a.starts_with("-O") && name == "wget" && a.len() > 2 => {
                    output = Some(a[2..].to_owned())
                }
                a if !a.starts_with('-') => url = Some(a.to_owned()),
                _ => {}
            }
        }
        let body = format!(
            "(the simulator has no network: placeholder for {})\n",
            url.unwrap_or_default()
        )
        .into_bytes();
        let note = "no network: the content is a placeholder";
        match output.filter(|o| o != "-") {
            Some(file) => {
                let path = self.path(&file);
                match self.host.redirect(&path, &body, false) {
                    Ok(()) => Out::note(note),
                    Err(reason) => Out::fail(23, format!("{name}: {reason}")),
                }
            }
            None => Out {
                stdout: body,
                ..Out::note(note)
            },
        }
    }

    fn gpg(&mut self, args: &[String], stdin: &[u8]) -> Out {
        if !args.iter().any(|a| a == "--dearmor" || a == "--dearmour") {
            return Out::not_interpreted("gpg other than --dearmor");
        }
        let mut output = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "-o" || arg == "--output" {
                output = iter.next().cloned();
            } else if let Some(o) = arg.strip_prefix("--output=") {
                output = Some(o.to_owned());
            }
        }
        let mut data = b"(dearmored keyring) ".to_vec();
        data.extend_from_slice(stdin);
        match output {
            Some(file) => {
                let path = self.path(&file);
                match self.host.redirect(&path, &data, false) {
                    Ok(()) => Out::ok(),
                    Err(reason) => Out::fail(2, format!("gpg: {reason}")),
                }
            }
            None => Out::stdout(data),
        }
    }
}

/// What `netplan apply` does, and what systemd-networkd does at every boot with what
/// `netplan generate` made of the same files: every `addresses:` entry of
/// `/etc/netplan/*.yaml` goes on its interface (created for bonds, VLANs, bridges, dummy
/// devices). Notes say what was skipped.
pub(super) fn apply_netplan(host: &mut Host) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for path in host.files_in("/etc/netplan") {
        if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            continue;
        }
        let text = host
            .file(&path)
            .and_then(|f| f.text())
            .unwrap_or_default()
            .to_owned();
        let doc: Value = match serde_yaml::from_str(&text) {
            Ok(doc) => doc,
            Err(e) => {
                return Err(format!("netplan: error in network definition {path}: {e}"));
            }
        };
        let Some(network) = doc.get("network") else {
            continue;
        };
        for section in [
            "ethernets",
            "bonds",
            "vlans",
            "bridges",
            "dummy-devices",
            "tunnels",
        ] {
            let Some(Value::Mapping(interfaces)) = network.get(section) else {
                continue;
            };
            for (name, config) in interfaces {
                let Some(name) = name.as_str() else { continue };
                let exists = host.interfaces().contains_key(name);
                if section == "ethernets" && !exists {
                    notes.push(format!("{name}: no such interface on this host"));
                    continue;
                }
                host.ensure_interface(name);
                let Some(Value::Sequence(addresses)) = config.get("addresses") else {
                    continue;
                };
                for entry in addresses {
                    let text = match entry {
                        Value::String(s) => s.clone(),
                        Value::Mapping(m) => m
                            .keys()
                            .next()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        _ => continue,
                    };
                    match text.parse::<InterfaceAddress>() {
                        Ok(address) => {
                            let _ = host.add_address(name, address);
                        }
                        Err(e) => return Err(format!("netplan: {path}: {e}")),
                    }
                }
            }
        }
    }
    Ok(notes)
}

impl Out {
    fn status(status: i32) -> Self {
        Self {
            status,
            ..Self::ok()
        }
    }
}

fn exit_out(status: i32, what: &str) -> Out {
    if status == 0 {
        Out::ok()
    } else {
        Out::fail(status, format!("{what} exited with status {status}"))
    }
}

/// An apt source: its URI and keyring.
struct AptSource {
    uri: String,
    signed_by: Option<String>,
}

/// One-line (`.list`) and deb822 (`.sources`) entries.
fn apt_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    if text.lines().any(|l| l.trim_start().starts_with("URIs:")) {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            if let Some(uris) = field("URIs:") {
                for uri in uris.split_whitespace() {
                    out.push(AptSource {
                        uri: uri.to_owned(),
                        signed_by: field("Signed-By:"),
                    });
                }
            }
        }
        return out;
    }
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(options) = rest.strip_prefix('[') {
            let Some((options, tail)) = options.split_once(']') else {
                continue;
            };
            signed_by = options
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by=").map(str::to_owned));
            rest = tail.trim();
        }
        if let Some(uri) = rest.split_whitespace().next() {
            out.push(AptSource {
                uri: uri.to_owned(),
                signed_by,
            });
        }
    }
    out
}

/// `https://pkgs.k8s.io/core:/stable:/v1.34/deb/` → 34.
fn kube_repo_minor(uri: &str) -> Option<u32> {
    let rest = uri.split("pkgs.k8s.io/core:/stable:/v1.").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

/// `s/FROM/TO/` or `s/FROM/TO/g` with no regular-expression characters in FROM.
fn literal_substitution(script: &str) -> Option<(String, String, bool)> {
    let rest = script.strip_prefix('s')?;
    let delimiter = rest.chars().next()?;
    let parts: Vec<&str> = rest[delimiter.len_utf8()..].split(delimiter).collect();
    let [from, to, flags] = parts.as_slice() else {
        return None;
    };
    let special = |s: &str| s.contains(['.', '[', ']', '*', '^', '$', '\\', '&']);
    if special(from) || special(to) || !flags.chars().all(|c| c == 'g') || from.is_empty() {
        return None;
    }
    Some(((*from).to_owned(), (*to).to_owned(), flags.contains('g')))
}

fn parse_mode(mode: &str, current: u32) -> Option<u32> {
    if !mode.is_empty() && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u32::from_str_radix(mode, 8).ok();
    }
    let (who, perms) = mode.split_once('+')?;
    if !who.chars().all(|c| "ugoa".contains(c)) {
        return None;
    }
    let mut bits = 0;
    for p in perms.chars() {
        bits |= match p {
            'x' => 0o111,
            'r' => 0o444,
            'w' => 0o222,
            _ => return None,
        };
    }
    let mask = if who.is_empty() || who.contains('a') {
        0o777
    } else {
        who.chars().fold(0, |m, c| {
            m | match c {
                'u' => 0o700,
                'g' => 0o070,
                _ => 0o007,
            }
        })
    };
    Some(current | (bits & mask))
}

/// dash's `echo`: `-n`, and backslash escapes always interpreted.
fn echo(args: &[String]) -> String {
    let (newline, args) = match args.first() {
        Some(first) if first == "-n" => (false, &args[1..]),
        _ => (true, args),
    };
    let (mut text, stopped) = unescape(&args.join(" "));
    if newline && !stopped {
        text.push('\n');
    }
    text
}

/// Backslash escapes as `printf` and dash's `echo` read them; `true` when `\c` stopped
/// the output.
fn unescape(text: &str) -> (String, bool) {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some('c') => return (out, true),
            Some('0') => {
                let mut value = 0u32;
                for _ in 0..3 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(value).unwrap_or('\0'));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    (out, false)
}

fn printf(format: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    loop {
        let mut consumed = false;
        let mut chars = format.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            out.push_str(&unescape(&std::mem::take(&mut literal)).0);
            match chars.next() {
                Some('%') => out.push('%'),
                Some(conv @ ('s' | 'b' | 'd' | 'i' | 'u')) => {
                    consumed = true;
                    let arg = args.next().cloned().unwrap_or_default();
                    match conv {
                        'b' => out.push_str(&unescape(&arg).0),
                        's' => out.push_str(&arg),
                        _ => out.push_str(&arg.trim().parse::<i64>().unwrap_or(0).to_string()),
                    }
                }
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out.push_str(&unescape(&literal).0);
        if !consumed || args.len() == 0 {
            return out;
        }
    }
}

fn test(shell: &Shell<'_>, args: &[String]) -> i32 {
    let result = match args {
        [] => false,
        [bang, rest @ ..] if bang == "!" => return i32::from(test(shell, rest) == 0),
        [s] => !s.is_empty(),
        [op, path] if op.starts_with('-') => {
            let path = shell.path(path);
            match op.as_str() {
                "-f" => shell.host.file(&path).is_some(),
                "-d" => shell.host.is_dir(&path),
                "-e" => shell.host.file(&path).is_some() || shell.host.is_dir(&path),
                "-s" => shell.host.file(&path).is_some_and(|f| !f.data.is_empty()),
                "-x" => shell.host.file(&path).is_some_and(|f| f.mode & 0o111 != 0),
                "-n" => !args[1].is_empty(),
                "-z" => args[1].is_empty(),
                _ => false,
            }
        }
        [a, op, b] => match op.as_str() {
            "=" | "==" => a == b,
            "!=" => a != b,
            _ => false,
        },
        _ => false,
    };
    i32::from(!result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_and_echo_read_escapes_like_dash() {
        assert_eq!(
            printf("overlay\\nbr_netfilter\\n", &[]),
            "overlay\nbr_netfilter\n"
        );
        assert_eq!(
            printf(
                "%s=%s\\n",
                &["a".into(), "1".into(), "b".into(), "2".into()]
            ),
            "a=1\nb=2\n"
        );
        assert_eq!(echo(&["a\\tb".into()]), "a\tb\n");
        assert_eq!(echo(&["-n".into(), "x".into()]), "x");
    }

    #[test]
    fn apt_sources_find_the_kubernetes_repository() {
        let sources = apt_sources(
            "deb [signed-by=/etc/apt/keyrings/k.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /\n",
        );
        assert_eq!(
            sources[0].signed_by.as_deref(),
            Some("/etc/apt/keyrings/k.gpg")
        );
        assert_eq!(kube_repo_minor(&sources[0].uri), Some(34));
        let deb822 = apt_sources(
            "Types: deb\nURIs: https://pkgs.k8s.io/core:/stable:/v1.30/deb/\nSuites: /\nSigned-By: /k.gpg\n",
        );
        assert_eq!(kube_repo_minor(&deb822[0].uri), Some(30));
        assert_eq!(deb822[0].signed_by.as_deref(), Some("/k.gpg"));
    }

    #[test]
    fn sed_applies_literal_substitutions_only() {
        assert_eq!(
            literal_substitution("s/SystemdCgroup = false/SystemdCgroup = true/"),
            Some((
                "SystemdCgroup = false".into(),
                "SystemdCgroup = true".into(),
                false
            ))
        );
        assert_eq!(literal_substitution("/ swap / s/^/#/"), None);
        assert_eq!(parse_mode("0700", 0o644), Some(0o700));
        assert_eq!(parse_mode("+x", 0o644), Some(0o755));
        assert_eq!(parse_mode("u+x", 0o644), Some(0o744));
    }
}
