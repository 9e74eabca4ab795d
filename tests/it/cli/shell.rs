//! `sshq shell DEVICE` driven in a real pseudo-terminal (portable-pty) against a real sshd:
//! typing and its echo, raw mode (Ctrl-C reaches the device), resize followed by `stty size`
//! on the device, the shell's exit status as the CLI's, the terminal restored; pipe mode; the
//! refusal when the tenant does not allow shells.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sshq_tests::{SshDevice, TestStack};

use super::{Cli, text};

pub(super) async fn allow_shells(stack: &TestStack) {
    let (status, body) = stack
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&stack.api_key),
            Some(&json!({ "interactive_sessions": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What the pty's master has read so far.
#[derive(Clone, Default)]
pub(super) struct Screen(pub(super) Arc<Mutex<Vec<u8>>>);

impl Screen {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the screen holds `needle` (after `from` bytes); returns where it ends.
    pub(super) async fn wait_for(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let bytes = self.0.lock().unwrap();
                let tail = String::from_utf8_lossy(&bytes[from.min(bytes.len())..]).into_owned();
                if let Some(at) = tail.find(needle) {
                    return from + at + needle.len();
                }
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?}; the screen: {:?}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

pub(super) fn sshq_path() -> String {
    let bin_dir = std::env::var("SSHQ_TEST_BIN_DIR")
        .unwrap_or_else(|_| format!("{}/../target/debug", env!("CARGO_MANIFEST_DIR")));
    format!("{bin_dir}/sshq")
}

#[tokio::test]
async fn sshq_shell_is_a_raw_terminal_that_resizes_and_exits_with_the_shell() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    allow_shells(&stack).await;
    raw_terminal_session(&stack.base, &stack.api_key, &id, &[]).await;
}

/// `sshq shell ID` against the API at `url` in a real pty, with `env` besides the API's URL
/// and key: typing and its echo, Ctrl-C reaching the device, `stty size` before and after a
/// resize, `exit 3` → exit code 3 with the terminal restored.
pub(super) async fn raw_terminal_session(url: &str, key: &str, id: &str, env: &[(&str, &str)]) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(sshq_path());
    command.args(["shell", id]);
    command.env_clear();
    command.env("HOME", std::env::temp_dir());
    command.env("TERM", "xterm");
    command.env("SSHQ_API_URL", url);
    command.env("SSHQ_API_KEY", key);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let screen = Screen::default();
    let mut reader = pty.master.try_clone_reader().unwrap();
    let sink = screen.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.0.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    let mut keyboard = pty.master.take_writer().unwrap();
    let mut type_keys = |keys: &str| {
        keyboard.write_all(keys.as_bytes()).unwrap();
        keyboard.flush().unwrap();
    };

    // Typing: the device's echo, then the command's output.
    type_keys("echo typed-$((6*7))\r");
    let at = screen.wait_for("echo typed-$((6*7))", 0).await;
    let at = screen.wait_for("typed-42", at).await;

    // Raw mode: Ctrl-C goes to the device (it interrupts `sleep` there, not the CLI here).
    type_keys("sleep 30\r");
    let at = screen.wait_for("sleep 30", at).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    type_keys("\x03");
    type_keys("echo after-$((1+1))\r");
    let at = screen.wait_for("after-2", at).await;

    // The size at open, then a resize of the local terminal reaches the device.
    type_keys("stty size\r");
    let at = screen.wait_for("24 80", at).await;
    pty.master
        .resize(PtySize {
            rows: 31,
            cols: 101,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut at = at;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        type_keys("stty size\r");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if screen.text()[at..].contains("31 101") {
            break;
        }
        at = screen.len();
        assert!(Instant::now() < deadline, "{:?}", screen.text());
    }

    // `exit 3`: the CLI exits 3, says why the shell closed, and leaves raw mode.
    type_keys("exit 3\r");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.exit_code(), 3, "{:?}", screen.text());
    screen.wait_for("sshq: shell closed", 0).await;
    let termios = pty.master.get_termios().expect("a unix pty");
    assert_ne!(
        termios.local_flags.bits() & libc::ICANON,
        0,
        "canonical mode restored"
    );
    assert_ne!(termios.local_flags.bits() & libc::ECHO, 0, "echo restored");
}

#[tokio::test]
async fn sshq_shell_pipes_stdin_and_closes_on_its_end() {
    let stack = TestStack::start().await;
    let device = SshDevice::start();
    let id = stack.register(&device).await;
    let cli = Cli::new(&stack);

    // Shells not allowed for the tenant: no shell, 255 and the API's reason.
    let out = cli.run_with_stdin(&["shell", &id], b"exit 0\n").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("interactive_sessions"),
        "{}",
        text(&out.stderr)
    );
    allow_shells(&stack).await;

    let out = cli
        .run_with_stdin(&["shell", &id], b"echo piped-$((2+3))\nexit 5\n")
        .await;
    assert!(
        text(&out.stdout).contains("piped-5"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    // The end of stdin ends the shell (its exit status is the last command's).
    let out = cli
        .run_with_stdin(&["shell", &id], b"echo eof-$((3+4))\n")
        .await;
    assert!(text(&out.stdout).contains("eof-7"), "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sshq: shell closed"),
        "{}",
        text(&out.stderr)
    );

    // The end of stdin while a command still runs (the device's terminal then is in
    // canonical mode), and input that does not end in a newline.
    for _ in 0..3 {
        let out = cli
            .run_with_stdin(&["shell", &id], b"sleep 0.5; echo slept-$((1+1))\n")
            .await;
        assert!(
            text(&out.stdout).contains("slept-2"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = cli
        .run_with_stdin(&["shell", &id], b"echo last-$((4+4)); false")
        .await;
    assert!(
        text(&out.stdout).contains("last-8"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "the last command's status");

    // An unknown device: 255 too, with the reason.
    let out = cli.run_with_stdin(&["shell", "no-such-device"], b"").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("no device named"),
        "{}",
        text(&out.stderr)
    );
}
