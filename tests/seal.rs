//! SOPS sealing against the real sops, age and age-keygen, and the keygen/decrypt commands.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use rackform::{
    pki::{ClusterPki, Kubeconfig},
    seal::{self, AgeIdentity, AgeRecipient},
};
use rand::{SeedableRng, rngs::StdRng};
use secrecy::ExposeSecret;
use serde_yaml::Value;
use time::OffsetDateTime;

/// Every kind of scalar SOPS types, nesting, lists, a clear subtree, an empty string and a null.
const PLAIN: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: demo
  labels:
    tier: db
stringData:
  password: hunter2
  port: 5432
  ratio: 1.5
  negative: -7
  enabled: true
  disabled: false
  empty: ""
  nothing: null
  unicode: "grüße, 東京"
  multiline: |
    line one
    line two
list:
- a
- 7
- [nested, 3.25]
- {k: v}
settings_unencrypted:
  visible: yes-in-clear
  count: 3
"#;

fn value(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Runs a real tool; a missing tool is a failure, since the test script installs it.
fn command(program: &str, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("RACKFORM_AGE_KEY_FILE");
    command
}

fn output(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"))
}

fn stdout_ok(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An identity made by the real `age-keygen`, with its recipient.
fn age_keygen(dir: &Path, name: &str) -> (PathBuf, AgeRecipient) {
    let path = dir.join(name);
    stdout_ok(command("age-keygen", dir).arg("-o").arg(&path));
    let recipient = stdout_ok(command("age-keygen", dir).arg("-y").arg(&path));
    (path, recipient.trim().parse().unwrap())
}

fn identities(path: &Path) -> Vec<AgeIdentity> {
    AgeIdentity::parse_file(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sops_decrypt(dir: &Path, key: &Path, file: &Path) -> Output {
    output(
        command("sops", dir)
            .env("SOPS_AGE_KEY_FILE", key)
            .args(["--disable-version-check", "--decrypt"])
            .arg(file),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn real_sops_decrypts_what_we_seal() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let (other_key, other) = age_keygen(dir.path(), "other.txt");
    let sealed = seal::seal(PLAIN, &[recipient, other], now()).unwrap();
    assert!(!sealed.contains("hunter2"));
    assert!(
        sealed.contains("visible: yes-in-clear"),
        "the _unencrypted subtree stays clear"
    );
    let file = write(dir.path(), "secret.sops.yaml", &sealed);

    for key in [&key, &other_key] {
        let out = sops_decrypt(dir.path(), key, &file);
        assert!(
            out.status.success(),
            "sops -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(value(&String::from_utf8(out.stdout).unwrap()), value(PLAIN));
    }
}

#[test]
fn real_sops_refuses_our_file_with_a_foreign_key_or_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let (stranger, _) = age_keygen(dir.path(), "stranger.txt");
    let sealed = seal::seal(PLAIN, &[recipient], now()).unwrap();
    let file = write(dir.path(), "secret.sops.yaml", &sealed);
    let out = sops_decrypt(dir.path(), &stranger, &file);
    assert_eq!(out.status.code(), Some(128), "CouldNotRetrieveKey");

    // Renaming a key breaks its value's AAD, for sops and for us.
    let renamed = sealed.replace("  password:", "  passw0rd:");
    assert_ne!(renamed, sealed);
    let file = write(dir.path(), "renamed.sops.yaml", &renamed);
    let out = sops_decrypt(dir.path(), &key, &file);
    assert_eq!(out.status.code(), Some(25), "ErrorDecryptingTree");
    let err = seal::unseal(&renamed, &identities(&key)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "decrypting the value at stringData.passw0rd (wrong key, or the file was edited)"
    );

    // Editing a clear value is caught by the MAC.
    let edited = sealed.replace("visible: yes-in-clear", "visible: edited");
    let file = write(dir.path(), "edited.sops.yaml", &edited);
    let out = sops_decrypt(dir.path(), &key, &file);
    assert_eq!(out.status.code(), Some(51), "MacMismatch");
    let err = seal::unseal(&edited, &identities(&key)).unwrap_err();
    assert!(matches!(err, seal::Error::MacMismatch), "{err}");
}

/// Encrypts `PLAIN` (with a comment) with the real sops and extra flags, then opens it with ours.
fn sops_encrypted(dir: &Path, recipient: &AgeRecipient, flags: &[&str], plain: &str) -> String {
    let input = write(dir, "plain.yaml", plain);
    stdout_ok(
        command("sops", dir)
            .args(["--disable-version-check", "--encrypt", "--age"])
            .arg(recipient.to_string())
            .args(flags)
            .arg(&input),
    )
}

#[test]
fn we_decrypt_what_real_sops_encrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let commented = format!("# a comment sops encrypts\n{PLAIN}");
    for flags in [
        &[][..],
        &["--encrypted-regex", "^(data|stringData)$"][..],
        &["--mac-only-encrypted"][..],
        &["--unencrypted-suffix", "_clear"][..],
    ] {
        let sealed = sops_encrypted(dir.path(), &recipient, flags, &commented);
        assert!(!sealed.contains("hunter2"), "{flags:?}");
        let plain =
            seal::unseal(&sealed, &identities(&key)).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert_eq!(value(plain.expose_secret()), value(PLAIN), "{flags:?}");
    }
}

#[test]
fn we_decrypt_a_multi_document_file_real_sops_encrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let plain = "a: 1\nb: two\n---\nc: [3, four]\n";
    let sealed = sops_encrypted(dir.path(), &recipient, &[], plain);
    let ours = seal::unseal(&sealed, &identities(&key)).unwrap();
    let documents: Vec<&str> = ours.expose_secret().split("---\n").collect();
    assert_eq!(documents.len(), 2);
    assert_eq!(value(documents[0]), value("a: 1\nb: two"));
    assert_eq!(value(documents[1]), value("c: [3, four]"));

    // And the other way round: our multi-document file opens with sops.
    let sealed = seal::seal(plain, &[recipient], now()).unwrap();
    let file = write(dir.path(), "multi.sops.yaml", &sealed);
    let out = sops_decrypt(dir.path(), &key, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("c:").count(), 1, "{text}");
}

#[test]
fn real_age_opens_the_wrapped_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let sealed = seal::seal(PLAIN, std::slice::from_ref(&recipient), now()).unwrap();
    let metadata = &value(&sealed)["sops"];
    assert_eq!(
        metadata["age"][0]["recipient"].as_str(),
        Some(recipient.to_string().as_str())
    );
    let enc = metadata["age"][0]["enc"].as_str().unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    let file = write(dir.path(), "data-key.age", enc);
    let out = output(
        command("age", dir.path())
            .arg("--decrypt")
            .arg("-i")
            .arg(&key)
            .arg(&file),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32, "the raw 32-byte data key");

    let lastmodified = metadata["lastmodified"].as_str().unwrap();
    assert_eq!(
        lastmodified.len(),
        "2026-11-23T02:40:55Z".len(),
        "{lastmodified}"
    );
    assert!(lastmodified.ends_with('Z'));
    assert_eq!(metadata["version"].as_str(), Some(seal::SOPS_VERSION));
}

#[test]
fn seal_if_changed_keeps_the_file_unless_content_or_recipients_change() {
    let alice = AgeIdentity::generate();
    let bob = AgeIdentity::generate();
    let both = [alice.to_public(), bob.to_public()];
    let mine = std::slice::from_ref(&alice);

    let first = seal::seal_if_changed(PLAIN, &both, None, mine, now())
        .unwrap()
        .expect("no file yet");
    // Same content, same recipients in another order: no rewrite.
    let reversed = [bob.to_public(), alice.to_public()];
    assert!(
        seal::seal_if_changed(PLAIN, &reversed, Some(&first), mine, now())
            .unwrap()
            .is_none()
    );
    // Same values, other formatting: still no rewrite.
    let reformatted = serde_yaml::to_string(&value(PLAIN)).unwrap();
    assert!(
        seal::seal_if_changed(&reformatted, &both, Some(&first), mine, now())
            .unwrap()
            .is_none()
    );

    let changed = PLAIN.replace("hunter2", "hunter3");
    let second = seal::seal_if_changed(&changed, &both, Some(&first), mine, now())
        .unwrap()
        .expect("content changed");
    assert_eq!(
        value(seal::unseal(&second, mine).unwrap().expose_secret()),
        value(&changed)
    );

    let only_alice = [alice.to_public()];
    let third = seal::seal_if_changed(PLAIN, &only_alice, Some(&first), mine, now())
        .unwrap()
        .expect("recipients changed");
    assert_eq!(
        seal::recipients(&third).unwrap(),
        vec![alice.to_public().to_string()]
    );
    assert!(!bob.opens(&third).unwrap());

    // Same recipients but no identity to compare with: an error, never a rewrite per pass.
    let carol = AgeIdentity::generate();
    let err = seal::seal_if_changed(PLAIN, &both, Some(&first), &[carol], now()).unwrap_err();
    assert!(
        matches!(err, seal::Error::NoMatchingIdentity { .. }),
        "{err}"
    );

    // A file that is not SOPS at all is replaced.
    assert!(
        seal::seal_if_changed(PLAIN, &both, Some("a: 1\n"), mine, now())
            .unwrap()
            .is_some()
    );
}

#[test]
fn sealing_refuses_what_sops_cannot_hold() {
    let r = [AgeIdentity::generate().to_public()];
    let err = |plain: &str| seal::seal(plain, &r, now()).unwrap_err().to_string();
    assert_eq!(
        err("- a\n- b\n"),
        "document 1 is not a mapping; sops seals mappings only"
    );
    assert_eq!(
        err("sops: 1\n"),
        "document 1 already has a top-level `sops` key"
    );
    assert_eq!(err(""), "the input has no YAML document");
    assert!(err("a: !custom x\n").contains("has a YAML tag"));
    // A syntax error names where, never what.
    let message = err("password: [hunter2\n");
    assert!(
        message.starts_with("reading the document as YAML"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(
        seal::seal(PLAIN, &[], now()).unwrap_err().to_string(),
        "sealing needs at least one age recipient"
    );
}

/// The whole path of issue 5: the admin kubeconfig rackform makes, sealed, opened by sops.
#[test]
fn sealed_admin_kubeconfig_opens_with_sops() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let mut rng = StdRng::seed_from_u64(5);
    let pki = ClusterPki::generate(now(), &mut rng).unwrap();
    let kubeconfig = pki
        .ca
        .admin_kubeconfig("edge", "203.0.113.10:6443", now(), &mut rng)
        .unwrap();
    let plain = kubeconfig.to_yaml().unwrap();
    let sealed = seal::seal(plain.expose_secret(), &[recipient], now()).unwrap();
    let client_key = &kubeconfig.users[0].user.client_key_data;
    assert!(!sealed.contains(client_key.expose_secret()));
    let file = write(dir.path(), "edge.sops.yaml", &sealed);
    let out = sops_decrypt(dir.path(), &key, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened = Kubeconfig::from_yaml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        opened.users[0].user.client_key_data.expose_secret(),
        client_key.expose_secret()
    );
    assert_eq!(
        opened.clusters[0].cluster.server,
        "https://203.0.113.10:6443"
    );
}

#[test]
fn identities_and_plaintexts_redact_in_debug() {
    let identity = AgeIdentity::generate();
    let secret = identity.expose().expose_secret().to_owned();
    let debug = format!("{identity:?}");
    assert!(!debug.contains(&secret), "{debug}");
    assert!(debug.contains(&identity.to_public().to_string()));
    let sealed = seal::seal(PLAIN, &[identity.to_public()], now()).unwrap();
    let plain = seal::unseal(&sealed, std::slice::from_ref(&identity)).unwrap();
    assert!(!format!("{plain:?}").contains("hunter2"));
    let err = seal::unseal(&sealed, &[AgeIdentity::generate()]).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&secret));

    let err = AgeIdentity::parse_file("# comment\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid age identity on line 2"),
        "{err}"
    );
    assert!(!err.to_string().contains("NOTAKEY"), "{err}");
}

fn rackform(dir: &Path) -> Command {
    command(env!("CARGO_BIN_EXE_rackform"), dir)
}

#[test]
fn keygen_writes_a_private_identity_age_keygen_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(rackform(dir.path()).args(["keygen", "-o", "id.txt"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let printed = stderr.trim().strip_prefix("Public key: ").expect(&stderr);
    assert!(out.stdout.is_empty(), "the identity goes to the file only");

    let derived = stdout_ok(command("age-keygen", dir.path()).args(["-y", "id.txt"]));
    assert_eq!(derived.trim(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("id.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Never overwrite an identity.
    let before = std::fs::read(dir.path().join("id.txt")).unwrap();
    let out = output(rackform(dir.path()).args(["keygen", "-o", "id.txt"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("creating identity file id.txt"));
    assert_eq!(std::fs::read(dir.path().join("id.txt")).unwrap(), before);

    // Without -o the identity goes to standard output.
    let out = output(rackform(dir.path()).arg("keygen"));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(AgeIdentity::parse_file(&text).unwrap().len(), 1);
}

#[test]
fn decrypt_prints_a_file_sops_wrote_with_each_way_of_naming_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let sealed = sops_encrypted(dir.path(), &recipient, &[], PLAIN);
    write(dir.path(), "secret.sops.yaml", &sealed);

    let check = |cmd: &mut Command| {
        let text = stdout_ok(cmd);
        assert_eq!(value(&text), value(PLAIN));
    };
    check(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml", "--identity"])
            .arg(&key),
    );
    check(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml"])
            .env("RACKFORM_AGE_KEY_FILE", &key),
    );
    check(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml"])
            .env("SOPS_AGE_KEY_FILE", &key),
    );
    let inline = std::fs::read_to_string(&key).unwrap();
    check(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml"])
            .env("SOPS_AGE_KEY", inline),
    );

    // No identity anywhere: a clear error, exit 1.
    let out = output(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml"])
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no age identity"));

    // The wrong identity: exit 1, names the recipients, prints nothing.
    let (stranger, _) = age_keygen(dir.path(), "stranger.txt");
    let out = output(
        rackform(dir.path())
            .args(["decrypt", "secret.sops.yaml", "-i"])
            .arg(&stranger),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&recipient.to_string()));
}
