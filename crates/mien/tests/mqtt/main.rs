//! `mien run --mqtt` against a real broker: Debian's mosquitto, started by each test on a free loopback
//! port with a generated config, and watched with `mosquitto_sub`.

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn on_path(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

/// Whether mosquitto and its clients are here; fails in CI, says why it skips elsewhere.
fn have_mosquitto(test: &str) -> bool {
    for tool in ["mosquitto", "mosquitto_sub", "mosquitto_pub", "mosquitto_passwd", "openssl"] {
        if !on_path(tool) && !Path::new(&format!("/usr/sbin/{tool}")).exists() {
            common::missing(test, &format!("`{tool}` is not installed (apt-get install mosquitto mosquitto-clients openssl)"));
            return false;
        }
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A mosquitto on a loopback port, stopped when dropped.
struct Broker {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Broker {
    /// A broker with `extra` config lines (listener options follow the `listener` line).
    fn start(dir: Arc<tempfile::TempDir>, listener_extra: &str, port: Option<u16>) -> Broker {
        let port = port.unwrap_or_else(free_port);
        let config = dir.path().join(format!("mosquitto-{port}.conf"));
        // Started as root, mosquitto would drop to its own user, which cannot read the test's files.
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let user = if root { "user root\n" } else { "" };
        let text = format!("{user}persistence false\nper_listener_settings true\nlistener {port} 127.0.0.1\n{listener_extra}\n");
        let text = if listener_extra.contains("password_file") { text } else { format!("{text}allow_anonymous true\n") };
        std::fs::write(&config, text).unwrap();
        let mut broker = Broker { child: None, port, config, _dir: dir };
        broker.restart();
        broker
    }

    fn restart(&mut self) {
        let program = if on_path("mosquitto") { "mosquitto".to_string() } else { "/usr/sbin/mosquitto".to_string() };
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new(program).arg("-c").arg(&self.config).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start: {}", std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One received message.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    retained: bool,
    payload: String,
    at: Instant,
}

/// `mosquitto_sub` on a topic filter, collecting every message.
struct Subscriber {
    child: Child,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Subscriber {
    fn start(port: u16, filter: &str, extra: &[&str]) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", filter, "-F", "%r\t%t\t%p", "-q", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, '\t');
                let (Some(retained), Some(topic), Some(payload)) = (parts.next(), parts.next(), parts.next()) else { continue };
                kept.lock().unwrap().push(Message { topic: topic.into(), retained: retained == "1", payload: payload.into(), at: Instant::now() });
            }
        });
        // Subscribed before anything is published: give it a moment to connect.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, messages }
    }

    fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message on `topic` matching `check`, received after `since`.
    fn wait(&self, topic: &str, since: Instant, limit: Duration, check: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = self.all().into_iter().find(|m| m.topic == topic && m.at >= since && check(m)) {
                return m;
            }
            assert!(Instant::now() < deadline, "no such message on {topic} within {limit:?}; got {:?}", self.topics());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.all().into_iter().map(|m| m.topic).collect();
        topics.dedup();
        topics
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mien run` over the committed photos in a loop, publishing to `url`; stderr kept.
struct Mien {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Mien {
    fn start(url: &str, device: &str, extra: &[&str]) -> Mien {
        let mut command = common::mien_command();
        command
            .args(["run", "--source"])
            .arg(common::photos())
            .args(["--loop", "--max-fps", "10", "--threads", "1", "--json", "--plan"])
            .arg(common::tiny_plan())
            .args(["--mqtt", url, "--device-id", device])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let kept = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut text = kept.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Mien { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap().success());
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "mien did not stop; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mien {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(m: &Message) -> Value {
    serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", m.topic, m.payload))
}

#[test]
fn discovery_state_events_and_a_clean_stop() {
    if !have_mosquitto("discovery_state_events_and_a_clean_stop") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let broker = Broker::start(dir, "", None);
    let all = Subscriber::start(broker.port, "#", &[]);
    let start = Instant::now();
    let mut mien = Mien::start(&broker.url(), "kiosk-a", &[]);

    all.wait("mien/kiosk-a/availability", start, Duration::from_secs(30), |m| m.payload == "online");
    // Home Assistant's five entities, retained (a subscriber that comes later gets them at once).
    let late = Subscriber::start(broker.port, "homeassistant/#", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let configs = loop {
        let configs: Vec<Message> = late.all().into_iter().filter(|m| m.retained).collect();
        if configs.len() >= 5 {
            break configs;
        }
        assert!(Instant::now() < deadline, "retained discovery configs: {configs:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for m in &configs {
        assert!(m.topic.ends_with("/config"), "{}", m.topic);
        let config = json(m);
        assert!(config["unique_id"].as_str().unwrap().starts_with("mien_kiosk-a_"), "{config}");
        assert_eq!(config["availability_topic"], "mien/kiosk-a/availability");
        assert_eq!(config["device"]["identifiers"][0], "mien_kiosk-a");
        assert_eq!(config["device"]["model"], "tiny-vit");
        assert!(config["state_topic"].as_str().unwrap().starts_with("mien/kiosk-a/"));
    }

    // The state follows the photos: some with a face, some without; retained.
    let with_face = all.wait("mien/kiosk-a/state", start, Duration::from_secs(30), |m| json(m)["face_present"] == true);
    assert!(with_face.retained || all.all().iter().any(|m| m.topic == "mien/kiosk-a/state"));
    let state = json(&with_face);
    assert!(state["dominant_expression"].is_string() && state["faces"][0]["probabilities"].is_object(), "{state}");
    all.wait("mien/kiosk-a/state", start, Duration::from_secs(30), |m| json(m)["face_present"] == false);
    let later = Subscriber::start(broker.port, "mien/kiosk-a/state", &[]);
    let retained = later.wait("mien/kiosk-a/state", start, Duration::from_secs(5), |m| m.retained);
    assert!(json(&retained)["frame"].is_u64());

    // Events: each photo's faces appear and leave (photos are not tracked across).
    let appeared = all.wait("mien/kiosk-a/events", start, Duration::from_secs(30), |m| json(m)["event"] == "appeared");
    assert!(!appeared.retained);
    let a = json(&appeared);
    assert!(a["track"].is_u64() && a["label"].is_string() && a["score"].is_number(), "{a}");
    all.wait("mien/kiosk-a/events", start, Duration::from_secs(30), |m| json(m)["event"] == "left" && json(m)["duration_s"].is_number());

    // A clean stop says offline.
    let stopping = Instant::now();
    mien.signal("-TERM");
    assert!(mien.wait(Duration::from_secs(15)).success(), "{}", mien.stderr());
    all.wait("mien/kiosk-a/availability", stopping, Duration::from_secs(10), |m| m.payload == "offline");
}

#[cfg(target_arch = "x86_64")]
/// A face that changes expression in place: the astronaut's smile and the cameraman's face, scaled and
/// placed so their boxes overlap (one track), two frames each: happy, sad, happy with the quick-start plan.
fn changing_expression_video(path: &Path) {
    let astronaut = image::open(common::root().join("tests/data/photos/astronaut.png")).unwrap().to_rgb8();
    let smile = image::imageops::crop_imm(&astronaut, 96, 0, 256, 256).to_image();
    let camera = image::open(common::root().join("tests/data/photos/camera.png")).unwrap().to_rgb8();
    let face = image::imageops::crop_imm(&camera, 160, 93, 136, 136).to_image();
    let face = image::imageops::resize(&face, 204, 204, image::imageops::FilterType::CatmullRom);
    let mut bytes = b"YUV4MPEG2 W320 H320 F10:1 Ip A1:1 C420jpeg\n".to_vec();
    for i in 0..6 {
        let mut frame = image::RgbImage::from_pixel(320, 320, image::Rgb([70, 80, 90]));
        if (i / 2) % 2 == 0 {
            image::imageops::replace(&mut frame, &smile, 32, 32);
        } else {
            image::imageops::replace(&mut frame, &face, 66, 54);
        }
        bytes.extend_from_slice(b"FRAME\n");
        bytes.extend(mien_capture::pixel::scalar::from_rgb(&frame, mien_capture::PixelFormat::Yu12, mien_capture::YuvEncoding::default()));
    }
    std::fs::write(path, bytes).unwrap();
}

// x86-64 only: the event logic is the same everywhere, and under qemu the quick-start plan's 30 MB load
// and inferences take a minute and more (armv7) of CI for nothing new.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_face_that_changes_expression_appears_changes_and_leaves() {
    if !have_mosquitto("a_face_that_changes_expression_appears_changes_and_leaves") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let video = dir.path().join("expressions.y4m");
    changing_expression_video(&video);
    let broker = Broker::start(dir.clone(), "", None);
    let events = Subscriber::start(broker.port, "mien/kiosk-e/events", &[]);
    let out = common::mien_command()
        .args(["run", "--source"])
        .arg(&video)
        .arg("--plan")
        .arg(common::root().join("models/vit-s14-fer/vit-s14-fer-int8.mien"))
        // Every frame's own label, so the change shows at once.
        .args(["--smoothing", "1", "--switch-margin", "0", "--threads", "1", "--json", "--no-ha-discovery"])
        .args(["--mqtt", &broker.url(), "--device-id", "kiosk-e"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got: Vec<Value> = events.all().iter().map(json).collect();
        if got.iter().any(|e| e["event"] == "left") || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The cameraman's top label is a low-confidence one that differs between CPUs' kernels (sad here,
    // angry on armv7): any label but happy.
    let events: Vec<&str> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["appeared", "changed", "changed", "left"], "{got:?}");
    let labels: Vec<&str> = got.iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert!(labels[0] == "happy" && labels[1] != "happy" && labels[2] == "happy" && labels[3] == "happy", "{got:?}");
    assert_eq!((got[1]["from"].as_str(), got[2]["from"].as_str()), (Some("happy"), Some(labels[1])), "{got:?}");
    assert!(got.iter().all(|e| e["track"] == got[0]["track"]), "one track: {got:?}");
    assert!(got[3]["duration_s"].as_f64().unwrap() >= 0.5, "six frames at 10 fps: {}", got[3]);
}

#[test]
fn a_killed_mien_goes_offline_by_its_will_and_a_fleet_is_told_apart() {
    if !have_mosquitto("a_killed_mien_goes_offline_by_its_will_and_a_fleet_is_told_apart") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let broker = Broker::start(dir, "", None);
    let states = Subscriber::start(broker.port, "mien/+/state", &[]);
    let availability = Subscriber::start(broker.port, "mien/+/availability", &[]);
    let start = Instant::now();
    let mut first = Mien::start(&broker.url(), "lobby-1", &["--no-ha-discovery"]);
    let _second = Mien::start(&broker.url(), "lobby-2", &["--no-ha-discovery"]);
    for id in ["lobby-1", "lobby-2"] {
        states.wait(&format!("mien/{id}/state"), start, Duration::from_secs(30), |_| true);
        availability.wait(&format!("mien/{id}/availability"), start, Duration::from_secs(30), |m| m.payload == "online");
    }
    let killed = Instant::now();
    first.signal("-KILL");
    first.wait(Duration::from_secs(5));
    availability.wait("mien/lobby-1/availability", killed, Duration::from_secs(30), |m| m.payload == "offline");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !availability.all().iter().any(|m| m.topic == "mien/lobby-2/availability" && m.payload == "offline"),
        "the other kiosk's will fired too"
    );
    // Only the first had discovery off: nothing under homeassistant/ from either.
}

#[test]
fn a_broker_restart_is_survived_and_home_assistant_gets_discovery_again() {
    if !have_mosquitto("a_broker_restart_is_survived_and_home_assistant_gets_discovery_again") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut broker = Broker::start(dir, "", None);
    let start = Instant::now();
    let mien = Mien::start(&broker.url(), "kiosk-r", &[]);
    let before = Subscriber::start(broker.port, "mien/kiosk-r/state", &[]);
    let frame_before = json(&before.wait("mien/kiosk-r/state", start, Duration::from_secs(30), |_| true))["frame"].as_u64().unwrap();
    drop(before);

    broker.stop();
    std::thread::sleep(Duration::from_secs(5));
    broker.restart();
    let back = Instant::now();
    let all = Subscriber::start(broker.port, "#", &[]);
    // The broker forgot everything (no persistence): mien says online again, and republishes its
    // discovery and state, with frames processed during the outage.
    all.wait("mien/kiosk-r/availability", back, Duration::from_secs(40), |m| m.payload == "online");
    all.wait("homeassistant/sensor/kiosk-r/faces_present/config", back, Duration::from_secs(10), |_| true);
    let state = all.wait("mien/kiosk-r/state", back, Duration::from_secs(10), |_| true);
    let frame_after = json(&state)["frame"].as_u64().unwrap();
    // At 10 frames a second for the 5 s outage, or 2-3 under qemu on a busy machine; a pipeline blocked on
    // the lost broker would advance by the frames in flight only.
    assert!(frame_after >= frame_before + 5, "frames kept being processed: {frame_before} then {frame_after}");
    assert!(mien.stderr().contains("MQTT broker mqtt://127.0.0.1"), "a notice about the lost broker:\n{}", mien.stderr());

    // Home Assistant restarting announces itself: discovery again.
    std::thread::sleep(Duration::from_millis(500));
    let birth = Instant::now();
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "homeassistant/status", "-m", "online"])
        .status()
        .unwrap();
    assert!(published.success());
    all.wait("homeassistant/binary_sensor/kiosk-r/face_present/config", birth, Duration::from_secs(10), |_| true);
}

#[test]
fn a_broker_that_comes_up_after_mien_is_connected_to_when_it_does() {
    if !have_mosquitto("a_broker_that_comes_up_after_mien_is_connected_to_when_it_does") {
        return;
    }
    let port = free_port();
    let mien = Mien::start(&format!("mqtt://127.0.0.1:{port}"), "kiosk-late", &[]);
    // The broker comes up once mien has been refused (loading takes seconds under qemu).
    let refused = format!("MQTT broker mqtt://127.0.0.1:{port}: Connection refused");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mien.stderr().contains(&refused) {
        assert!(Instant::now() < deadline, "no notice of the refused connection in 60 s:\n{}", mien.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few retries while the broker is down.
    std::thread::sleep(Duration::from_secs(2));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let broker = Broker::start(dir, "", Some(port));
    let up = Instant::now();
    let all = Subscriber::start(broker.port, "mien/kiosk-late/#", &[]);
    all.wait("mien/kiosk-late/availability", up, Duration::from_secs(30), |m| m.payload == "online");
    all.wait("mien/kiosk-late/state", up, Duration::from_secs(10), |_| true);
    let stderr = mien.stderr();
    assert_eq!(stderr.matches("Connection refused").count(), 1, "one notice per outage, not one per retry:\n{stderr}");
}

#[test]
fn passwords_right_and_wrong() {
    if !have_mosquitto("passwords_right_and_wrong") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let passwords = dir.path().join("passwords");
    let made = Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&passwords).args(["kiosk", "right-password"]).status().unwrap();
    assert!(made.success());
    let broker = Broker::start(dir.clone(), &format!("allow_anonymous false\npassword_file {}", passwords.display()), None);
    let right = dir.path().join("right");
    std::fs::write(&right, "right-password\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-password\n").unwrap();

    let start = Instant::now();
    let url = format!("mqtt://kiosk@127.0.0.1:{}", broker.port);
    let _good = Mien::start(&url, "with-password", &["--mqtt-password-file", right.to_str().unwrap()]);
    let bad = Mien::start(&url, "wrong-password", &["--mqtt-password-file", wrong.to_str().unwrap()]);
    // A subscriber needs the password too.
    let all = Subscriber::start(broker.port, "mien/#", &["-u", "kiosk", "-P", "right-password"]);
    all.wait("mien/with-password/availability", start, Duration::from_secs(30), |m| m.payload == "online");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bad.stderr().contains("refused") {
        assert!(Instant::now() < deadline, "no error line for a wrong password:\n{}", bad.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = bad.stderr().lines().find(|l| l.contains("refused")).unwrap().to_string();
    eprintln!("wrong password: {line}");
    assert!(line.contains(&format!("MQTT broker mqtt://kiosk@127.0.0.1:{}", broker.port)), "{line}");
    assert!(!bad.stderr().contains("wrong-password\n") && !line.contains("wrong-password"), "the password was logged: {line}");
    assert!(!all.all().iter().any(|m| m.topic.starts_with("mien/wrong-password/")));

    // With --exit-on-mqtt-error the run stops instead, with the error on one line.
    let mut strict = Mien::start(&url, "strict", &["--mqtt-password-file", wrong.to_str().unwrap(), "--exit-on-mqtt-error"]);
    let status = strict.wait(Duration::from_secs(30));
    assert!(!status.success());
    let stderr = strict.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("mien: ") && last.contains("refused"), "{stderr}");
    eprintln!("--exit-on-mqtt-error: {last}");
}

/// A CA and a server certificate for `localhost`, made with openssl.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mien test CA"]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    let mut ext = std::fs::File::create(dir.join("server.ext")).unwrap();
    writeln!(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1").unwrap();
    run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn tls_with_the_broker_s_ca_and_without_it() {
    if !have_mosquitto("tls_with_the_broker_s_ca_and_without_it") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (ca, cert, key) = certificates(dir.path());
    let tls = format!("cafile {}\ncertfile {}\nkeyfile {}", ca.display(), cert.display(), key.display());
    let broker = Broker::start(dir.clone(), &tls, None);
    let url = format!("mqtts://localhost:{}", broker.port);
    let start = Instant::now();
    let _trusted = Mien::start(&url, "tls-ok", &["--mqtt-ca", ca.to_str().unwrap()]);
    let untrusted = Mien::start(&url, "tls-unknown-ca", &[]);
    let all = Subscriber::start(broker.port, "mien/#", &["--cafile", ca.to_str().unwrap(), "-h", "localhost"]);
    all.wait("mien/tls-ok/availability", start, Duration::from_secs(30), |m| m.payload == "online");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !untrusted.stderr().to_lowercase().contains("certificate") {
        assert!(Instant::now() < deadline, "no certificate error:\n{}", untrusted.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = untrusted.stderr().lines().find(|l| l.to_lowercase().contains("certificate")).unwrap().to_string();
    eprintln!("unknown CA: {line}");
    assert!(line.contains(&format!("MQTT broker mqtts://localhost:{}", broker.port)), "{line}");
}

#[test]
fn a_client_certificate_for_a_broker_that_requires_one() {
    if !have_mosquitto("a_client_certificate_for_a_broker_that_requires_one") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (ca, cert, key) = certificates(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=kiosk"]);
    // An X.509 v3 certificate (with an extension): webpki refuses v1 ones.
    std::fs::write(dir.path().join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.ext"]);
    let tls = format!("cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true", ca.display(), cert.display(), key.display());
    let broker = Broker::start(dir.clone(), &tls, None);
    let url = format!("mqtts://localhost:{}", broker.port);
    let (client_cert, client_key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    let with = Mien::start(
        &url,
        "tls-client-cert",
        &["--mqtt-ca", ca.to_str().unwrap(), "--mqtt-cert", client_cert.to_str().unwrap(), "--mqtt-key", client_key.to_str().unwrap()],
    );
    let without = Mien::start(&url, "tls-no-client-cert", &["--mqtt-ca", ca.to_str().unwrap()]);
    let all = Subscriber::start(
        broker.port,
        "mien/#",
        &["--cafile", ca.to_str().unwrap(), "-h", "localhost", "--cert", client_cert.to_str().unwrap(), "--key", client_key.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all.all().iter().any(|m| m.topic == "mien/tls-client-cert/availability" && m.payload == "online") {
        assert!(
            Instant::now() < deadline,
            "not online with a client certificate; mien: {}\nbroker: {}",
            with.stderr(),
            std::fs::read_to_string(broker.config.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !without.stderr().contains(&format!("MQTT broker mqtts://localhost:{}", broker.port)) {
        assert!(Instant::now() < deadline, "no error without a client certificate:\n{}", without.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!all.all().iter().any(|m| m.topic.starts_with("mien/tls-no-client-cert/")));
}

#[test]
fn bad_mqtt_options_are_one_line_errors() {
    let photos = common::photos();
    let plan = common::tiny_plan();
    for (args, expected) in [
        (vec!["--mqtt", "http://broker"], "mien: --mqtt: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got `http://broker`"),
        (vec!["--mqtt", "mqtt://broker:x"], "mien: --mqtt: `mqtt://broker:x`: port `x` is not a number"),
        (vec!["--mqtt", "mqtt://broker", "--device-id", "Kiosk #1"], "mien: --mqtt: --device-id: expected lowercase letters, digits, - and _, got `Kiosk #1`"),
        (vec!["--mqtt", "mqtt://broker", "--mqtt-ca", "/nonexistent/ca.pem"], "mien: --mqtt: --mqtt-ca: certificates need an mqtts:// broker, got mqtt://broker:1883"),
        (vec!["--mqtt", "mqtts://broker", "--mqtt-ca", "/nonexistent/ca.pem"], "mien: --mqtt: /nonexistent/ca.pem: No such file or directory (os error 2)"),
    ] {
        let out = common::mien_command()
            .args(["run", "--source"])
            .arg(&photos)
            .arg("--plan")
            .arg(&plan)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), expected, "{args:?}");
    }
}
