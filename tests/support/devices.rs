//! The devices: real OpenSSH sshd processes on loopback (`SshDevice`). Devices that
//! are not what they claim are in `fake_ssh`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::services::{env, free_port};

/// A real OpenSSH sshd on loopback, accepting the test client key for the device user.
pub struct SshDevice {
    pub port: u16,
    pub host_key: String,
    pub user: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl SshDevice {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path("host_key"))
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen failed");
        let client_pub =
            std::fs::read_to_string(format!("{}.pub", env("SSHQ_TEST_SSH_KEY"))).unwrap();
        std::fs::write(path("authorized_keys"), client_pub).unwrap();
        let user = env("SSHQ_TEST_DEVICE_USER");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin no\nAllowUsers {user}\nUsePAM no\nMaxSessions 64\nMaxStartups 200:30:400\nLogLevel ERROR\n",
            hk = path("host_key").display(),
            pid = path("sshd.pid").display(),
            ak = path("authorized_keys").display(),
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new(env("SSHQ_TEST_SSHD"))
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host_key = std::fs::read_to_string(path("host_key.pub")).unwrap();
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            host_key,
            user,
            child,
            dir,
        }
    }

    /// Lets `public_key` (an `authorized_keys` line) log in too; sshd reads the file at each
    /// login, so it takes effect on the next connection.
    pub fn trust(&self, public_key: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .unwrap();
        writeln!(file, "{}", public_key.trim()).unwrap();
    }

    /// Trusts only `public_keys` from now on (the suite's client key included only if given).
    pub fn trust_only(&self, public_keys: &[String]) {
        let lines: String = public_keys
            .iter()
            .map(|k| format!("{}\n", k.trim()))
            .collect();
        std::fs::write(self.dir.path().join("authorized_keys"), lines).unwrap();
    }

    /// Cuts every established connection while the device keeps listening, as a restart of
    /// the device's sshd would: every process below the listener (per-connection monitors,
    /// session processes, commands) is killed.
    pub fn drop_connections(&self) -> usize {
        let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_string_lossy().parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // After the command name (which may contain spaces): state, then ppid.
                let ppid = stat
                    .rsplit_once(") ")?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut doomed = vec![self.child.id()];
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(
                parents
                    .iter()
                    .filter(|(_, ppid)| *ppid == parent)
                    .map(|(pid, _)| *pid),
            );
            i += 1;
        }
        let victims = &doomed[1..];
        for pid in victims {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        victims.len()
    }

    /// Stops the device (its listener; sessions already forked end with it too).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SshDevice {
    fn drop(&mut self) {
        self.kill();
    }
}
