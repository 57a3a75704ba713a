//! The packaging, run as far as this machine can without a container runtime: the
//! Dockerfile's command and health check, as the image's non-root user; the compose file's
//! three members (with the certificates its `certs` service makes) as a peer-mTLS cluster on
//! loopback, its host names and ports swapped for loopback ones; the systemd unit through
//! `systemd-analyze verify`; the compose file through `docker-compose config`. The image itself is not built here: no registry for its base
//! images is reachable (docs/OPERATIONS.md says so).

mod common;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{free_port, wait_until, BIN, WAIT_TIMEOUT};

const CTL: &str = env!("CARGO_BIN_EXE_coordinatectl");
/// The image's user (Dockerfile: `useradd --uid 10001`).
const IMAGE_UID: u32 = 10001;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Started processes, killed by pid when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The words of a Dockerfile instruction's JSON form (`CMD ["a", "b"]`), its line
/// continuations joined.
fn instruction(dockerfile: &str, name: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .rfind(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile"));
    let json = &line[line.find('[').expect("JSON form")..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The words of the Dockerfile's `HEALTHCHECK ... CMD [...]`.
fn healthcheck(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let (_, json) = line.split_once(" CMD ").expect("HEALTHCHECK ... CMD");
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("HEALTHCHECK: {e}"))
}

/// Runs `coordinatectl` with `args`; true if it exits 0.
fn ctl_ok(args: &[String]) -> bool {
    Command::new(CTL)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_images_command_serves_as_its_user_and_passes_its_health_check() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("read Dockerfile");
    assert!(
        dockerfile.contains("\nUSER coordinate\n"),
        "the image runs as root"
    );
    assert!(dockerfile.contains("VOLUME [\"/var/lib/coordinate\"]"));
    let entrypoint = instruction(&dockerfile, "ENTRYPOINT");
    assert_eq!(entrypoint, ["coordinate"]);
    let health = healthcheck(&dockerfile);
    assert_eq!(health[0], "coordinatectl", "{health:?}");
    let cmd = instruction(&dockerfile, "CMD");

    // The image's layout: its data directory owned by its user, nothing else writable.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("var/lib/coordinate");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown (as root)");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (client, peer) = (free_port(), free_port());
    let swap = |a: &String| {
        a.replace("/var/lib/coordinate", data.to_str().unwrap())
            .replace("0.0.0.0:2379", &format!("127.0.0.1:{client}"))
            .replace("127.0.0.1:2379", &format!("127.0.0.1:{client}"))
            .replace("127.0.0.1:2380", &format!("127.0.0.1:{peer}"))
    };
    let args: Vec<String> = cmd.iter().map(swap).collect();
    let mut procs = Procs(Vec::new());
    let child = Command::new(BIN)
        .args(&args)
        .current_dir(&data)
        .uid(IMAGE_UID)
        .gid(IMAGE_UID)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the image's command");
    procs.0.push(child);
    let check: Vec<String> = health[1..].iter().map(swap).collect();
    assert!(
        wait_until(WAIT_TIMEOUT, || ctl_ok(&check)),
        "the health check {check:?} never passed for {args:?}"
    );
    let endpoint = format!("127.0.0.1:{client}");
    let put = ["--endpoints", &endpoint, "put", "k", "v"].map(String::from);
    assert!(ctl_ok(&put));
    // What it wrote is its user's.
    let owners: Vec<u32> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| std::os::unix::fs::MetadataExt::uid(&e.unwrap().metadata().unwrap()))
        .collect();
    assert!(
        !owners.is_empty() && owners.iter().all(|&u| u == IMAGE_UID),
        "{owners:?}"
    );
}

/// The `command:` list of each service of the compose file (our own file's layout: a
/// two-space service name, then `      - ` items).
fn compose_commands(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut service = None;
    let mut in_command = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !name.starts_with(' ') {
                service = Some(name.to_string());
                in_command = false;
                continue;
            }
        }
        let trimmed = line.trim_start();
        if trimmed == "command:" {
            in_command = true;
        } else if in_command && trimmed.starts_with("- ") && line.starts_with("      ") {
            if let Some(s) = &service {
                out.entry(s.clone())
                    .or_default()
                    .push(trimmed[2..].to_string());
            }
        } else if in_command && !line.starts_with("        ") {
            in_command = false;
        } else if in_command {
            // A folded continuation of the item before.
            if let Some(last) = service.as_ref().and_then(|s| out.get_mut(s)?.last_mut()) {
                last.push(' ');
                last.push_str(trimmed);
            }
        }
    }
    out
}

#[test]
fn the_compose_clusters_members_form_a_peer_mtls_cluster() {
    let text = std::fs::read_to_string(repo("deploy/docker-compose.yml")).expect("compose");
    let commands = compose_commands(&text);
    let certs_cmd = commands["certs"].join(" ");
    let word_after = |flag: &str| {
        certs_cmd
            .split_whitespace()
            .skip_while(|w| *w != flag)
            .nth(1)
            .unwrap_or_else(|| panic!("{flag} in {certs_cmd}"))
            .to_string()
    };
    let (peers_flag, hosts_flag) = (word_after("--peers"), word_after("--hosts"));

    // Host names become loopback ports: nodeN:2380 and nodeN:2379 one pair per member.
    let tmp = tempfile::tempdir().expect("temp dir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let swap = |s: &str, member: usize| {
        let mut s = s.replace("/certs/", &format!("{}/certs/", tmp.path().display()));
        s = s.replace(
            "/var/lib/coordinate",
            tmp.path().join(format!("data{member}")).to_str().unwrap(),
        );
        for (i, (peer, client)) in ports.iter().enumerate() {
            s = s.replace(&format!("node{}:2380", i + 1), &format!("127.0.0.1:{peer}"));
            s = s.replace(
                &format!("node{}:2379", i + 1),
                &format!("127.0.0.1:{client}"),
            );
        }
        let (peer, client) = ports[member];
        s.replace("0.0.0.0:2380", &format!("127.0.0.1:{peer}"))
            .replace("0.0.0.0:2379", &format!("127.0.0.1:{client}"))
    };
    let certs = tmp.path().join("certs");
    let made = Command::new(CTL)
        .args(["certs", certs.to_str().unwrap()])
        .args(["--peers", &swap(&peers_flag, 0), "--hosts", &hosts_flag])
        .output()
        .expect("run coordinatectl certs");
    assert!(made.status.success(), "{made:?}");

    let mut procs = Procs(Vec::new());
    for member in 0..3 {
        let args: Vec<String> = commands[&format!("node{}", member + 1)]
            .iter()
            .map(|a| swap(a, member))
            .collect();
        assert!(
            args.iter().any(|a| a.starts_with("--peer-cert-file=")),
            "{args:?}"
        );
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a member");
        procs.0.push(child);
    }
    let tls = |endpoint: String| -> Vec<String> {
        let c = |f: &str| certs.join(f).display().to_string();
        vec![
            "--endpoints".into(),
            endpoint,
            "--cacert".into(),
            c("ca.pem"),
            "--cert".into(),
            c("client.pem"),
            "--key".into(),
            c("client-key.pem"),
        ]
    };
    let endpoint = |m: usize| format!("https://127.0.0.1:{}", ports[m].1);
    let mut put = tls(endpoint(0));
    put.extend(["put", "compose", "up"].map(String::from));
    assert!(
        wait_until(WAIT_TIMEOUT, || ctl_ok(&put)),
        "the compose cluster never took a write"
    );
    // Every member passes the compose file's health check (it knows the leader).
    let check: Vec<String> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("test: "))
        .map(|json| {
            let more = text
                .lines()
                .skip_while(|l| !l.trim().starts_with("test: "))
                .nth(1)
                .unwrap_or("");
            format!("{json}{}", more.trim())
        })
        .map(|json| serde_json::from_str(&json).expect("the health check's JSON"))
        .expect("a healthcheck");
    assert_eq!(check[..2], ["CMD", "coordinatectl"], "{check:?}");
    for member in 0..3 {
        let args: Vec<String> = check[2..]
            .iter()
            .map(|a| {
                swap(
                    &a.replace("localhost:2379", &format!("node{}:2379", member + 1)),
                    member,
                )
            })
            .collect();
        assert!(
            wait_until(WAIT_TIMEOUT, || ctl_ok(&args)),
            "member {} never passed {args:?}",
            member + 1
        );
    }
    // Read through another member: replicated over the peers' mTLS.
    let mut get = tls(endpoint(2));
    get.extend(["get", "compose"].map(String::from));
    let out = Command::new(CTL).args(&get).output().expect("get");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "up", "{out:?}");
    // Without a client certificate the port refuses (--client-cert-auth).
    let bare = [
        "--endpoints".to_string(),
        endpoint(1),
        "--cacert".into(),
        certs.join("ca.pem").display().to_string(),
        "get".into(),
        "compose".into(),
    ];
    assert!(!ctl_ok(&bare), "a client without a certificate was served");
}

#[test]
fn the_compose_file_is_valid_compose() {
    let out = Command::new("docker-compose")
        .args(["-f", repo("deploy/docker-compose.yml").to_str().unwrap()])
        .args(["config", "--quiet"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): apt-get install docker-compose")
        });
    assert!(out.status.success(), "{out:?}");
    let services = Command::new("docker-compose")
        .args(["-f", repo("deploy/docker-compose.yml").to_str().unwrap()])
        .args(["config", "--services"])
        .output()
        .expect("docker-compose config --services");
    let mut listed: Vec<String> = String::from_utf8_lossy(&services.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, ["certs", "node1", "node2", "node3"]);
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = repo("deploy/systemd/coordinate.service");
    let text = std::fs::read_to_string(&unit).expect("read the unit");
    for needed in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "User=coordinate",
    ] {
        assert!(text.contains(needed), "the unit lacks {needed}");
    }
    // systemd-analyze resolves ExecStart: point it at the built binary, in a copy.
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = tmp.path().join("coordinate.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/coordinate", BIN)).unwrap();
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run systemd-analyze ({e}): apt-get install systemd"),
    };
    let errors = String::from_utf8_lossy(&out.stderr);
    // Lines about the host's own units (none are loaded in a container) are not ours.
    let ours: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("coordinate.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{errors}");
}
