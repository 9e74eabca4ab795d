//! Devices that are not what they claim: listeners that never speak SSH, and an SSH server of
//! the test's own (russh's server side) that answers every command with hostile text.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Sig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a [`FakeDevice`] does with a connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Accepts and never says a word: a client waits for the SSH banner until it gives up.
    Tarpit,
    /// Answers like a web server and hangs up.
    NotSsh,
}

/// A loopback listener that counts the connections it accepted; stops on drop.
pub struct FakeDevice {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeDevice {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            // Held open until the device is dropped (the task with them).
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Tarpit => held.push(socket),
                    Behaviour::NotSsh => {
                        let _ = socket
                            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                            .await;
                    }
                }
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on loopback where nothing listens (connections are refused).
pub fn closed_port() -> u16 {
    crate::free_port()
}

/// An SSH server that accepts the test client key and answers every command with an exit
/// signal whose name and message hold NUL and an escape sequence, then closes the channel.
pub struct HostileSsh {
    pub port: u16,
    /// `ssh-ed25519 AAAA…`, to pin.
    pub host_key: String,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// The exit signal [`HostileSsh`] sends.
pub const HOSTILE_SIGNAL: &str = "\0KILL";
pub const HOSTILE_MESSAGE: &str = "boom\0\x1b[31mred\r\n";

impl HostileSsh {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("host_key");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key_path)
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen failed");
        let key: PrivateKey = russh::keys::load_secret_key(&key_path, None).unwrap();
        let host_key = key.public_key().to_openssh().unwrap();
        let client_pub =
            std::fs::read_to_string(format!("{}.pub", crate::env("SSHQ_TEST_SSH_KEY"))).unwrap();
        let client = russh::keys::parse_public_key_base64(
            client_pub
                .split_whitespace()
                .nth(1)
                .expect("a public key line"),
        )
        .unwrap();
        let config = Arc::new(server::Config {
            keys: vec![key],
            auth_rejection_time: std::time::Duration::from_millis(10),
            nodelay: true,
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let handler = Hostile {
                    client: client.clone(),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = server::run_stream(config, socket, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        Self {
            port,
            host_key,
            task,
            _dir: dir,
        }
    }
}

impl Drop for HostileSsh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Hostile {
    client: PublicKey,
}

impl server::Handler for Hostile {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.client.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.exit_signal_request(
            channel,
            Sig::Custom(HOSTILE_SIGNAL.into()),
            false,
            HOSTILE_MESSAGE,
            "en",
        )?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}
