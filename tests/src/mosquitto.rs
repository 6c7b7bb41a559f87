//! Mosquitto (Debian's) as a real cloud broker on a random loopback port. It runs as root
//! (`user root`) so its files stay readable, and with `max_queued_messages 0`, because its
//! default of 1,000 silently drops QoS 1 messages for a slow subscriber.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// A running Mosquitto; stopped (SIGKILL) on drop.
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    head: String,
    extra: String,
}

impl Mosquitto {
    /// Starts one on a free port.
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port(), "")
    }

    /// Starts one on `port` with extra config lines.
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        Mosquitto::start_with(port, "", extra)
    }

    /// Starts one on `port` with lines before its plain listener (`head`, e.g.
    /// `per_listener_settings true`) and after it (`extra`, e.g. more listeners).
    pub fn start_with(port: u16, head: &str, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Mosquitto { port, child: None, dir, head: head.to_owned(), extra: extra.to_owned() };
        broker.restart();
        broker
    }

    /// One whose plain listener (`port`, for the test's subscriber) stays anonymous and
    /// whose second listener, on the returned port, wants `user` with `password`.
    pub fn start_with_user(user: &str, password: &str) -> (Mosquitto, u16) {
        let dir = tempfile::tempdir().expect("temp dir");
        let passwords = dir.path().join("passwords");
        let made = Command::new("mosquitto_passwd").arg("-c").arg("-b").arg(&passwords).args([user, password]).status();
        assert!(made.expect("mosquitto_passwd").success(), "mosquitto_passwd failed");
        let secured = free_port();
        let extra =
            format!("listener {secured} 127.0.0.1\nallow_anonymous false\npassword_file {}\n", passwords.display());
        let head = "per_listener_settings true".to_owned();
        let mut broker = Mosquitto { port: free_port(), child: None, dir, head, extra };
        broker.restart();
        (broker, secured)
    }

    /// Not running yet: a port reserved for a cloud that is down at first.
    pub fn down() -> Mosquitto {
        let dir = tempfile::tempdir().expect("temp dir");
        Mosquitto { port: free_port(), child: None, dir, head: String::new(), extra: String::new() }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// (Re)starts it on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let config = format!(
            "{}\nlistener {} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nmax_inflight_messages 0\n{}\n",
            self.head, self.port, self.extra
        );
        std::fs::write(self.config_path(), config).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("mosquitto.log")).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .expect("mosquitto not installed: run scripts/test, which installs it");
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || TcpStream::connect(("127.0.0.1", port)).ok());
    }

    /// What it logged to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops it (SIGKILL: the link drops as in a real outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
