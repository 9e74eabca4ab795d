//! The `sshq` binary against an API behind TLS: a throwaway CA and server certificates made
//! with the `openssl` command, a rustls terminator in the test process forwarding bytes to the
//! stack's plain port (WebSocket upgrades pass through it like any bytes). `https://` means TLS
//! for every call and `wss://` for the shell; a certificate the CLI does not trust, or one for
//! another host name, fails with a sentence and exit 1 (255 for `shell`, like ssh).
//!
//! Mutual TLS: the terminator can demand a client certificate signed by the test CA (rustls's
//! `WebPkiClientVerifier`, as nginx's `ssl_verify_client on` or a mesh would); the CLI presents
//! `--client-cert`/`--client-key`'s (or the environment's, or the config file's) on every call
//! and the shell's WebSocket, and says in one sentence what is wrong when it has none, one from
//! another CA, or a key that is not the certificate's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sshq_tests::{SshDevice, TestStack};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::shell::{allow_shells, raw_terminal_session};
use super::{Cli, output, text};

/// A CA and the certificates it signed, as PEM files in a directory of the test's own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self::with_ca("sshq test CA")
    }

    /// A CA named `name` (two CAs of one name are told apart only by their signatures).
    fn with_ca(name: &str) -> Self {
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command (ops/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    }

    /// A new key (`key`) and a certificate signing request (`csr`) for the subject `name`.
    fn request(&self, name: &str, key: &str, csr: &str) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            key,
            "-out",
            csr,
        ]);
    }

    /// A server certificate `name` signed by the CA for `san` (e.g. `IP:127.0.0.1`).
    fn server(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        self.sign(
            name,
            &format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
    }

    /// A client certificate `name` (for client authentication) signed by the CA.
    fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.sign(
            name,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
    }

    /// A client certificate `name` signed by the CA that expired years ago (`openssl ca`, the
    /// one command that takes a start and an end date).
    fn expired_client(&self, name: &str) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(self.path("db")).unwrap();
        std::fs::write(self.path("db/index.txt"), "").unwrap();
        std::fs::write(self.path("db/serial"), "01\n").unwrap();
        std::fs::write(
            self.path("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = db/index.txt\nnew_certs_dir = db\n\
             serial = db/serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n\
             [client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth\n",
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.request(name, &key, &csr);
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            &csr,
            "-out",
            &pem,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-extensions",
            "client",
            "-notext",
        ]);
        (self.path(&pem), self.path(&key))
    }

    /// A new key and a certificate `name` for it, signed by the CA with the extensions `ext`.
    fn sign(&self, name: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        std::fs::write(self.path(&ext), extensions).unwrap();
        self.request(name, &key, &csr);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
        (self.path(&pem), self.path(&key))
    }
}

/// A TLS terminator on loopback in front of `upstream`: every accepted connection is
/// decrypted and its bytes copied both ways to a plain connection to the API.
struct Terminator {
    addr: SocketAddr,
    /// Handshakes that completed (a refused certificate never gets here).
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Terminator {
    async fn start(cert: &Path, key: &Path, upstream: SocketAddr) -> Self {
        Self::start_with(cert, key, upstream, ClientAuth::None).await
    }

    async fn start_with(
        cert: &Path,
        key: &Path,
        upstream: SocketAddr,
        client_auth: ClientAuth<'_>,
    ) -> Self {
        let certs = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let nginx = matches!(client_auth, ClientAuth::Nginx(_));
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(ca) | ClientAuth::Nginx(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(cert.unwrap()).unwrap();
                }
                let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                if nginx {
                    verifier = verifier.allow_unauthenticated();
                }
                builder.with_client_cert_verifier(verifier.build().unwrap())
            }
        };
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    if nginx && tls.get_ref().1.peer_certificates().is_none() {
                        return nginx_refusal(tls).await;
                    }
                    let Ok(mut api) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut api).await;
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

/// What the terminator asks of a client's certificate.
enum ClientAuth<'a> {
    None,
    /// One signed by this CA, or no handshake.
    Required(&'a Path),
    /// As nginx's `ssl_verify_client on`: the handshake completes without one, and the request
    /// is answered `400 No required SSL certificate was sent`.
    Nginx(&'a Path),
}

/// Reads a request's head and answers it as nginx does when no client certificate was sent.
async fn nginx_refusal(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let body = "<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n\
                <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                <center>No required SSL certificate was sent</center>\r\n\
                <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes()).await;
    let _ = tls.shutdown().await;
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn upstream(stack: &TestStack) -> SocketAddr {
    stack
        .base
        .strip_prefix("http://")
        .expect("the test stack's API is plain http")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// The CLI at `url`, trusting `ca` when given.
fn cli_at(stack: &TestStack, url: &str) -> Cli {
    let mut cli = Cli::new(stack);
    cli.base = url.to_owned();
    cli
}

#[tokio::test]
async fn https_and_wss_with_a_private_ca() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let pki = Pki::new();
    let (cert, key) = pki.server("api", "IP:127.0.0.1,DNS:localhost");
    let terminator = Terminator::start(&cert, &key, upstream(&stack)).await;
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let cli = cli_at(&stack, &terminator.url());

    // exec streams stdout and stderr and exits with the remote status, over HTTPS (SSE too).
    let mut command = cli.command(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    command.env("SSHQ_CA_CERT", ca);
    let out = output(command).await;
    assert_eq!(text(&out.stdout), "out\n", "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));

    // jobs list -o json, the CA given by the flag this time.
    let mut command = cli.command(&["jobs", "list", "-o", "json", "--ca-cert", ca]);
    command.env_remove("SSHQ_CA_CERT");
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["exit_status"], 7);

    // ... and by the config file, a relative path being relative to the file's folder.
    let dir = cli.home.path().join(".config/sshq");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(ca, dir.join("company-ca.pem")).unwrap();
    std::fs::write(dir.join("config.toml"), "ca_cert = \"company-ca.pem\"\n").unwrap();
    let out = cli.run(&["devices", "list", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::remove_file(dir.join("config.toml")).unwrap();

    // A fan-out's batch events over HTTPS too.
    let mut command = cli.command(&["exec", "--device", &id, "--", "echo", "fanned"]);
    command.env("SSHQ_CA_CERT", ca);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("| fanned"),
        "{}",
        text(&out.stdout)
    );

    // The platform's store is trusted by default: here the CA is in it through SSL_CERT_FILE,
    // as a machine whose administrator installed the company's CA would have it.
    let mut command = cli.command(&["devices", "list", "-o", "json"]);
    command.env("SSL_CERT_FILE", ca);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The shell in pipe mode over wss:// through the same terminator.
    allow_shells(&stack).await;
    let before = terminator.accepted.load(Ordering::SeqCst);
    let mut command = cli.command(&["shell", &id]);
    command.env("SSHQ_CA_CERT", ca);
    let out = pipe(command, b"echo tls-$((20+22))\nexit 4\n").await;
    assert!(
        text(&out.stdout).contains("tls-42"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        terminator.accepted.load(Ordering::SeqCst) > before,
        "the shell went through the TLS terminator"
    );

    // Without the CA: the certificate is not trusted, said in words, exit 1, nothing retried.
    let started = std::time::Instant::now();
    let out = cli.run(&["jobs", "list"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("TLS to the API at https://127.0.0.1:")
            && stderr.contains("not signed by a trusted certificate authority")
            && stderr.contains("--ca-cert"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("InvalidCertificate"),
        "no debug dump: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let out = cli.run(&["exec", &id, "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not signed by a trusted"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a refused certificate is not retried like a dropped connection"
    );
    // -o json keeps the error a JSON document.
    let out = cli.run(&["jobs", "list", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("not signed by a trusted")
    );
    // The shell over wss:// refuses it the same way (255: no shell ran, like ssh). Its device
    // is given by id, so the WebSocket is the first connection.
    let out = pipe(cli.command(&["shell", &id]), b"exit 0\n").await;
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not signed by a trusted"),
        "{}",
        text(&out.stderr)
    );

    // A CA file that is not one: a usage error before any connection.
    let bogus = pki.path("bogus.pem");
    std::fs::write(&bogus, "hello\n").unwrap();
    let mut command = cli.command(&["devices", "list"]);
    command.env("SSHQ_CA_CERT", &bogus);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no PEM certificate"));

    // http:// stays plain, with no TLS configuration needed.
    let plain = Cli::new(&stack);
    let out = plain.run(&["jobs", "list", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // ... and https:// to a plain port is no silent fall back: it fails.
    let mut command =
        cli_at(&stack, &stack.base.replacen("http://", "https://", 1)).command(&["jobs", "list"]);
    command.env("SSHQ_CA_CERT", ca);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    allow_shells(&stack).await;
    let pki = Pki::new();
    let (cert, key) = pki.server("elsewhere", "DNS:elsewhere.example");
    let terminator = Terminator::start(&cert, &key, upstream(&stack)).await;
    let ca = pki.path("ca.pem");
    let cli = cli_at(&stack, &terminator.url());

    let mut command = cli.command(&["jobs", "list", "-o", "json"]);
    command.env("SSHQ_CA_CERT", &ca);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not valid for the host name 127.0.0.1"),
        "{stderr}"
    );

    let mut command = cli.command(&["shell", &id]);
    command.env("SSHQ_CA_CERT", &ca);
    let out = pipe(command, b"exit 0\n").await;
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not valid for the host name 127.0.0.1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        terminator.accepted.load(Ordering::SeqCst),
        0,
        "no handshake completed"
    );
}

/// Runs `command` with `input` on its stdin (pipe mode for `shell`).
async fn pipe(mut command: Command, input: &'static [u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        // A command refused before it reads its input (a usage error) may have exited already.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// The one line a refused command prints, checked for the words that say what to do and for
/// no debug dump or key material.
fn one_sentence(out: &std::process::Output, code: i32, words: &[&str], key: &Path) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in: {stderr}");
    }
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for debug in ["AlertReceived", "InconsistentKeys", "Custom {", "Os {"] {
        assert!(!stderr.contains(debug), "no debug dump: {stderr}");
    }
    let pem = std::fs::read_to_string(key).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!stderr.contains(line), "key material printed: {stderr}");
    }
    stderr
}

/// A stack with one device (shells allowed) behind a terminator that demands client
/// certificates signed by the test CA (as `demand` says: refused handshakes, or nginx's
/// answer), and one such certificate (`cert`, `key`).
struct MutualTls {
    stack: TestStack,
    device: SshDevice,
    id: String,
    pki: Pki,
    /// The terminator's own certificate and key.
    server_cert: PathBuf,
    server_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    terminator: Terminator,
}

impl MutualTls {
    async fn start(demand: fn(&Path) -> ClientAuth<'_>) -> Self {
        let stack = TestStack::start().await;
        let device = SshDevice::start();
        let id = stack.register(&device).await;
        allow_shells(&stack).await;
        let pki = Pki::new();
        let (server_cert, server_key) = pki.server("api", "IP:127.0.0.1");
        let (cert, key) = pki.client("operator");
        let ca = pki.path("ca.pem");
        let terminator =
            Terminator::start_with(&server_cert, &server_key, upstream(&stack), demand(&ca)).await;
        Self {
            stack,
            device,
            id,
            pki,
            server_cert,
            server_key,
            cert,
            key,
            ca,
            terminator,
        }
    }
}

#[tokio::test]
async fn client_certificates_for_an_api_that_demands_them() {
    let MutualTls {
        stack,
        device: _device,
        id,
        pki,
        server_cert,
        server_key,
        cert,
        key,
        ca,
        terminator,
    } = MutualTls::start(|ca| ClientAuth::Required(ca)).await;
    let cli = cli_at(&stack, &terminator.url());
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let with_ca = |mut command: Command| {
        command.env("SSHQ_CA_CERT", &ca);
        command
    };
    // A command that gives a client certificate by the environment.
    let with_identity = |args: &[&str], cert: &Path, key: &Path| {
        let mut command = with_ca(cli.command(args));
        command
            .env("SSHQ_CLIENT_CERT", cert)
            .env("SSHQ_CLIENT_KEY", key);
        command
    };

    // With the certificate (flags): exec streams both outputs over HTTPS and SSE and exits
    // with the remote status.
    let command = with_ca(cli.command(&[
        "exec",
        &id,
        "--client-cert",
        cert_arg,
        "--client-key",
        key_arg,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]));
    let out = output(command).await;
    assert_eq!(text(&out.stdout), "out\n", "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));

    // The shell in pipe mode over wss:// with the environment's certificate.
    let before = terminator.accepted.load(Ordering::SeqCst);
    let out = pipe(
        with_identity(&["shell", &id], &cert, &key),
        b"echo mtls-$((40+2))\nexit 4\n",
    )
    .await;
    assert!(
        text(&out.stdout).contains("mtls-42"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(terminator.accepted.load(Ordering::SeqCst) > before);

    // The config file: every path relative to the file's folder.
    let dir = cli.home.path().join(".config/sshq");
    std::fs::create_dir_all(dir.join("id")).unwrap();
    std::fs::copy(&ca, dir.join("company-ca.pem")).unwrap();
    std::fs::copy(&cert, dir.join("id/me.pem")).unwrap();
    std::fs::copy(&key, dir.join("id/me.key")).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "ca_cert = \"company-ca.pem\"\nclient_cert = \"id/me.pem\"\nclient_key = \"id/me.key\"\n",
    )
    .unwrap();
    let jobs = cli.json(&["jobs", "list", "-o", "json"]).await;
    assert_eq!(jobs[0]["exit_status"], 7, "{jobs}");
    // A fan-out's batch events too.
    let out = cli
        .run(&["exec", "--device", &id, "--", "echo", "fanned"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("| fanned"),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_file(dir.join("config.toml")).unwrap();

    // Without a certificate: the server's `certificate_required`, worded with how to give one.
    let out = output(with_ca(cli.command(&["jobs", "list"]))).await;
    one_sentence(
        &out,
        1,
        &[
            "TLS to the API at https://127.0.0.1:",
            "requires a client certificate",
            "--client-cert FILE --client-key FILE",
            "SSHQ_CLIENT_CERT",
        ],
        &key,
    );
    let out = pipe(with_ca(cli.command(&["shell", &id])), b"exit 0\n").await;
    one_sentence(&out, 255, &["requires a client certificate"], &key);
    // -o json keeps it a JSON document.
    let out = output(with_ca(cli.command(&["jobs", "list", "-o", "json"]))).await;
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("requires a client certificate"),
        "{error}"
    );

    // A certificate signed by another CA: refused by the terminator, said so.
    let other = Pki::with_ca("another CA");
    let (stranger_cert, stranger_key) = other.client("stranger");
    let accepted = terminator.accepted.load(Ordering::SeqCst);
    let out = output(with_identity(
        &["devices", "list"],
        &stranger_cert,
        &stranger_key,
    ))
    .await;
    one_sentence(
        &out,
        1,
        &[
            "refused the client certificate (unknown_ca)",
            "signed by a CA the API trusts",
        ],
        &stranger_key,
    );
    let out = pipe(
        with_identity(&["shell", &id], &stranger_cert, &stranger_key),
        b"exit 0\n",
    )
    .await;
    one_sentence(
        &out,
        255,
        &["refused the client certificate"],
        &stranger_key,
    );
    // ... and by a CA of the same name as the trusted one (only its signature differs).
    let twin = Pki::new();
    let (twin_cert, twin_key) = twin.client("twin");
    let out = output(with_identity(&["jobs", "list"], &twin_cert, &twin_key)).await;
    one_sentence(
        &out,
        1,
        &["the API refused the client certificate"],
        &twin_key,
    );
    assert_eq!(
        terminator.accepted.load(Ordering::SeqCst),
        accepted,
        "the terminator completed no handshake with another CA's certificate"
    );

    // Signed by the right CA but expired, or made for a server: refused, said why.
    let (expired_cert, expired_key) = pki.expired_client("retired");
    let out = output(with_identity(
        &["jobs", "list"],
        &expired_cert,
        &expired_key,
    ))
    .await;
    one_sentence(
        &out,
        1,
        &["the API refused the client certificate: it has expired"],
        &expired_key,
    );
    let out = output(with_identity(&["jobs", "list"], &server_cert, &server_key)).await;
    one_sentence(
        &out,
        1,
        &[
            "refused the client certificate (unsupported_certificate)",
            "made for client authentication",
        ],
        &server_key,
    );

    // A key that is not the certificate's: checked before any connection.
    let out = output(with_identity(&["jobs", "list"], &cert, &stranger_key)).await;
    let said = one_sentence(
        &out,
        1,
        &["does not belong to the client certificate"],
        &stranger_key,
    );
    assert!(said.contains(stranger_key.to_str().unwrap()), "{said}");
    let out = pipe(
        with_identity(&["shell", &id], &cert, &stranger_key),
        b"exit 0\n",
    )
    .await;
    one_sentence(
        &out,
        255,
        &["does not belong to the client certificate"],
        &stranger_key,
    );
    // The two files swapped, a missing file, an encrypted key: one sentence each.
    let out = output(with_ca(cli.command(&[
        "jobs",
        "list",
        "--client-cert",
        key_arg,
        "--client-key",
        cert_arg,
    ])))
    .await;
    one_sentence(&out, 1, &["is a private key, not a certificate"], &key);
    let out = output(with_ca(cli.command(&[
        "jobs",
        "list",
        "--client-cert",
        "/nonexistent/me.pem",
        "--client-key",
        key_arg,
    ])))
    .await;
    one_sentence(
        &out,
        1,
        &["cannot read the client certificate /nonexistent/me.pem"],
        &key,
    );
    pki.openssl(&[
        "pkey",
        "-in",
        "operator.key",
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        "encrypted.key",
    ]);
    let encrypted = pki.path("encrypted.key");
    let out = output(with_ca(cli.command(&[
        "jobs",
        "list",
        "--client-cert",
        cert_arg,
        "--client-key",
        encrypted.to_str().unwrap(),
    ])))
    .await;
    one_sentence(&out, 1, &["is encrypted"], &encrypted);

    // Only one of the two: a usage error (2), for the shell too, before any connection.
    let out = output(with_ca(cli.command(&[
        "jobs",
        "list",
        "--client-cert",
        cert_arg,
    ])))
    .await;
    one_sentence(&out, 2, &["needs its key", "--client-key"], &key);
    let mut command = with_ca(cli.command(&["shell", &id]));
    command.env("SSHQ_CLIENT_KEY", &key);
    let out = pipe(command, b"exit 0\n").await;
    one_sentence(&out, 2, &["needs its certificate", "--client-cert"], &key);
    // One from the environment, the other from a flag: a pair.
    let mut command = with_ca(cli.command(&["jobs", "list", "--client-key", key_arg]));
    command.env("SSHQ_CLIENT_CERT", &cert);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // A client certificate for a plain http:// API is refused: it would not be sent.
    let plain = Cli::new(&stack);
    let out = plain
        .run(&[
            "jobs",
            "list",
            "--client-cert",
            cert_arg,
            "--client-key",
            key_arg,
        ])
        .await;
    one_sentence(&out, 2, &["plain http://", "would not be sent"], &key);
}

#[tokio::test]
async fn a_raw_terminal_shell_over_wss_with_a_client_certificate() {
    let tls = MutualTls::start(|ca| ClientAuth::Required(ca)).await;
    raw_terminal_session(
        &tls.terminator.url(),
        &tls.stack.api_key,
        &tls.id,
        &[
            ("SSHQ_CA_CERT", tls.ca.to_str().unwrap()),
            ("SSHQ_CLIENT_CERT", tls.cert.to_str().unwrap()),
            ("SSHQ_CLIENT_KEY", tls.key.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        tls.terminator.accepted.load(Ordering::SeqCst) >= 1,
        "the shell went through the TLS terminator"
    );
}

#[tokio::test]
async fn an_nginx_style_refusal_says_a_client_certificate_is_needed() {
    let MutualTls {
        stack,
        device: _device,
        id,
        pki: _pki,
        cert,
        key,
        ca,
        terminator,
        ..
    } = MutualTls::start(|ca| ClientAuth::Nginx(ca)).await;
    let cli = cli_at(&stack, &terminator.url());

    // No certificate: the handshake completes and the proxy answers its 400 page, worded
    // (not retried, not an HTML dump), for HTTPS calls, the event stream and the shell.
    for args in [
        &["jobs", "list"][..],
        &["exec", &id, "--", "true"],
        &["jobs", "follow", "00000000-0000-0000-0000-000000000000"],
    ] {
        let mut command = cli.command(args);
        command.env("SSHQ_CA_CERT", &ca);
        let out = output(command).await;
        let said = one_sentence(
            &out,
            1,
            &[
                "the API's proxy requires a client certificate",
                "--client-cert FILE",
            ],
            &key,
        );
        assert!(!said.contains("<html>"), "{said}");
    }
    let mut command = cli.command(&["shell", &id]);
    command.env("SSHQ_CA_CERT", &ca);
    let out = pipe(command, b"exit 0\n").await;
    one_sentence(
        &out,
        255,
        &["the API's proxy requires a client certificate"],
        &key,
    );

    // With one, the same proxy passes everything through.
    let mut command = cli.command(&["exec", &id, "--", "sh", "-c", "echo through; exit 3"]);
    command
        .env("SSHQ_CA_CERT", &ca)
        .env("SSHQ_CLIENT_CERT", &cert)
        .env("SSHQ_CLIENT_KEY", &key);
    let out = output(command).await;
    assert_eq!(text(&out.stdout), "through\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
}

/// `openssl s_server` asking for a client certificate (`-Verify 1 -verify_return_error`): the
/// OpenSSL that nginx and HAProxy terminate TLS with, answering every GET with its status page
/// (`-www`). Killed when dropped.
struct OpensslServer {
    child: std::process::Child,
    port: u16,
}

impl OpensslServer {
    fn start(pki: &Pki, cert: &Path, key: &Path, version: &str) -> Self {
        use std::io::BufRead;
        for _ in 0..3 {
            let port = sshq_tests::free_port();
            let mut child = Command::new("openssl")
                .args([
                    "s_server",
                    "-accept",
                    &port.to_string(),
                    "-www",
                    "-Verify",
                    "1",
                ])
                .args(["-verify_return_error", version, "-CAfile", "ca.pem"])
                .arg("-cert")
                .arg(cert)
                .arg("-key")
                .arg(key)
                .current_dir(pki.dir.path())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the openssl command (ops/test installs it)");
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            // "ACCEPT" once it listens; an end of output first: the port was taken meanwhile.
            if lines.any(|line| line.is_ok_and(|l| l.starts_with("ACCEPT"))) {
                std::thread::spawn(move || lines.for_each(drop));
                return Self { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("openssl s_server did not start");
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn openssl_servers_that_demand_a_client_certificate_are_understood() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server("api", "IP:127.0.0.1");
    let (cert, key) = pki.client("operator");
    let other = Pki::with_ca("another CA");
    let (stranger_cert, stranger_key) = other.client("stranger");
    let ca = pki.path("ca.pem");
    // TLS 1.2 servers say `handshake_failure` for a missing certificate, 1.3 ones
    // `certificate_required`.
    for (version, missing) in [
        (
            "-tls1_2",
            "the server ended the handshake (handshake_failure); if it requires a client certificate, give one with --client-cert FILE",
        ),
        (
            "-tls1_3",
            "the API requires a client certificate: give one with --client-cert FILE",
        ),
    ] {
        let server = OpensslServer::start(&pki, &server_cert, &server_key, version);
        let cli = Cli {
            base: format!("https://127.0.0.1:{}", server.port),
            key: "sshq_unused".into(),
            home: tempfile::tempdir().unwrap(),
        };
        let mut command = cli.command(&["jobs", "list"]);
        command.env("SSHQ_CA_CERT", &ca);
        let out = output(command).await;
        one_sentence(&out, 1, &[missing], &key);

        let mut command = cli.command(&["jobs", "list"]);
        command
            .env("SSHQ_CA_CERT", &ca)
            .env("SSHQ_CLIENT_CERT", &stranger_cert)
            .env("SSHQ_CLIENT_KEY", &stranger_key);
        let out = output(command).await;
        one_sentence(
            &out,
            1,
            &["the API refused the client certificate (unknown_ca)"],
            &stranger_key,
        );

        // The right certificate: the handshake completes (the status page answers the GET,
        // which the CLI reads as no jobs).
        let mut command = cli.command(&["jobs", "list", "-o", "json"]);
        command
            .env("SSHQ_CA_CERT", &ca)
            .env("SSHQ_CLIENT_CERT", &cert)
            .env("SSHQ_CLIENT_KEY", &key);
        let out = output(command).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{version}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout).trim(), "[]");
    }
}
