//! The external services a test runs against: the environment `ops/test` exports, free
//! loopback ports and unique names, a database of the test's own on the shared Postgres (or
//! another server), a Postgres server of the test's own to stop and start (`PgInstance`), and a
//! JetStream cluster of nats-server processes (`NatsCluster`).

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through ops/test"))
}

/// The shared test server's URL for a service identity (`api`, `worker`, `projector`):
/// `SSHQ_TEST_NATS_<IDENTITY>_URL`, exported by ops/test.
pub fn service_nats_url(identity: &str) -> String {
    env(&format!(
        "SSHQ_TEST_NATS_{}_URL",
        identity.to_ascii_uppercase()
    ))
}

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
    )
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database on the test cluster.
pub async fn create_database(name: &str) -> String {
    create_database_on(&env("SSHQ_TEST_DATABASE_URL"), name).await
}

pub async fn create_database_on(admin: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("test Postgres reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A Postgres server of the test's own, to stop and start (Postgres runs as `postgres`).
pub struct PgInstance {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgInstance {
    fn bin(name: &str) -> String {
        let dir = std::env::var("SSHQ_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        format!("{dir}/{name}")
    }

    fn as_postgres(args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        let data_str = data.to_str().unwrap();
        Self::as_postgres(&[
            &Self::bin("initdb"),
            "-D",
            data_str,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        let instance = Self {
            port: free_port(),
            dir,
        };
        instance.resume();
        instance
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off",
            self.port,
            self.data()
        );
        let log = format!("{}/log", self.data());
        Self::as_postgres(&[
            &Self::bin("pg_ctl"),
            "-D",
            &self.data(),
            "-w",
            "-l",
            &log,
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops at once, as a crash or a lost server would.
    pub fn stop(&self) {
        Self::as_postgres(&[
            &Self::bin("pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &Self::bin("pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// A 3-node (or n-node) JetStream cluster on loopback, each node its own process, ports and
/// store; killed and deleted on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    /// The cluster's users and passwords (the same table as production, for any prefix).
    pub auth: schemas::nats_auth::ServerAuth,
    _dir: tempfile::TempDir,
}

pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub monitor_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    pub fn start(size: usize) -> Self {
        Self::start_with(size, None)
    }

    /// `size` nodes (one node: no cluster block) with sshq's authorization, and the auth
    /// callout to the issuer given, if any.
    pub fn start_with(size: usize, callout: Option<schemas::nats_auth::Callout>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let auth =
            schemas::nats_auth::ServerAuth::generate(schemas::nats_auth::PrefixScope::Any, callout);
        let mut nodes = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let cluster_block = if size > 1 {
                format!(
                    "cluster {{ name: sshq-test\n listen: 127.0.0.1:{cluster}\n routes: [{}] }}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 log_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n{cluster_block}{auth}",
                store = store.display(),
                log = dir.path().join(format!("{name}.log")).display(),
                auth = auth.render(),
            );
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).unwrap();
            let child = Command::new(env("SSHQ_TEST_NATS_SERVER"))
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            nodes.push(NatsNode {
                name,
                client_port: *client,
                monitor_port: *monitor,
                child: Some(child),
            });
        }
        let cluster = Self {
            nodes,
            auth,
            _dir: dir,
        };
        // Healthy means JetStream is up and the meta group has a leader, on every node. Three
        // servers electing a leader while the rest of the suite loads both cores can take
        // longer than on an idle machine: the bound is generous, the wait ends when healthy.
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &cluster.nodes {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            while !http_probe::blocking_get_ok(&url) {
                assert!(
                    Instant::now() < deadline,
                    "JetStream cluster did not become healthy"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The seed URLs of the admin identity, comma-separated, as the services take them.
    pub fn urls(&self) -> String {
        self.urls_as(schemas::nats_auth::Identity::Admin)
    }

    /// What node `name` logged so far (for failure messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self._dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every service identity's URLs, for `StackOptions::nats_service_urls`.
    pub fn service_urls(&self) -> std::collections::HashMap<String, String> {
        schemas::nats_auth::Identity::ALL
            .into_iter()
            .map(|i| (i.user().to_owned(), self.urls_as(i)))
            .collect()
    }

    /// The seed URLs without credentials (what a tenant client connects to with its token).
    pub fn bare_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The seed URLs with the credentials of `identity`.
    pub fn urls_as(&self, identity: schemas::nats_auth::Identity) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect();
        self.auth.url(identity, &hosts)
    }

    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

mod http_probe {
    /// A tiny blocking GET for helpers that run outside the runtime.
    pub fn blocking_get_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }
}
