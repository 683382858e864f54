//! The kiosk page in a real browser: Debian's `chromium`, headless, driven over the DevTools protocol
//! on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL on file descriptors 3 and 4,
//! connected here through two named pipes). While `mien run --serve --loop` reads the committed photos,
//! the page must show the faces' labels of the frame it says it shows (compared with a plain `--json`
//! run over the same photos) within 10 s; screenshots at 800x480 and 1920x1080 go to
//! target/tmp/kiosk/; after the server stops the page must say it is reconnecting, and when a server
//! comes back on the same port it must show frames again by itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mien::{photo_loop_args, photos, strs, tiny_plan, Mien};

/// A headless Chromium and one page in it.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

impl Browser {
    fn open(chromium: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (commands, events) = (profile.path().join("commands"), profile.path().join("events"));
        for fifo in [&commands, &events] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        // The shell connects the pipes to descriptors 3 and 4, then becomes chromium.
        let script = "exec \"$0\" \"$@\" 3<\"$MIEN_CDP_IN\" 4>\"$MIEN_CDP_OUT\"";
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(chromium)
            .args([
                "--headless=new",
                // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                "--window-size=800,480",
            ])
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg(url)
            .env("MIEN_CDP_IN", &commands)
            .env("MIEN_CDP_OUT", &events)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromium starts");
        // Opening blocks until the other side opens too; the shell opens `commands` first.
        let to_browser = std::fs::OpenOptions::new().write(true).open(&commands).unwrap();
        let from_browser = std::fs::File::open(&events).unwrap();
        let (send, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                    if send.send(value).is_err() {
                        break;
                    }
                }
                message.clear();
            }
        });
        let mut browser = Browser { child, to_browser, replies, next_id: 0, session: String::new(), _profile: profile };
        let targets = browser.call("Target.getTargets", json!({}), false);
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"))["targetId"]
            .clone();
        let attached = browser.call("Target.attachToTarget", json!({"targetId": page, "flatten": true}), false);
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// Sends a command (to the page's session when `in_page`) and waits for its result.
    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if in_page {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).unwrap();
        self.to_browser.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).unwrap_or_else(|_| panic!("no reply to {method}"));
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value as JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}), true);
        result["result"]["value"].clone()
    }

    /// What the page shows: its state, the frame and file it shows, and each face card's label.
    fn shown(&mut self) -> Value {
        let text = self.eval(
            "JSON.stringify({state: document.body.dataset.state, frame: document.body.dataset.frame, \
             file: document.body.dataset.file, title: document.getElementById('overlay-title').textContent, \
             labels: [...document.querySelectorAll('#faces .face')].map(e => e.dataset.label), \
             shown: [...document.querySelectorAll('#faces .face .label')].map(e => e.textContent), \
             preview: document.getElementById('preview').dataset.frame})",
        );
        serde_json::from_str(text.as_str().unwrap_or("null")).unwrap()
    }

    /// A screenshot at `width`x`height`, taken when `ready` says the page shows what is wanted.
    fn screenshot(&mut self, width: u32, height: u32, path: &Path, ready: impl Fn(&Value) -> bool) -> image::RgbaImage {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            true,
        );
        let started = Instant::now();
        loop {
            let shown = self.shown();
            if ready(&shown) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{}: the page never showed what was wanted: {shown}", path.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}), true);
        let png = base64_decode(shot["data"].as_str().unwrap());
        std::fs::write(path, &png).unwrap();
        image::load_from_memory(&png).unwrap().to_rgba8()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | value(*c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Each photo's face labels, from a plain `mien run --json` over the same photos.
fn labels_by_file() -> BTreeMap<String, Vec<String>> {
    let out = crate::mien::command()
        .args(["run", "--json", "--threads", "1", "--source"])
        .arg(photos())
        .arg("--plan")
        .arg(tiny_plan())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "frame")
        .map(|v| {
            let labels = v["faces"].as_array().unwrap().iter().map(|f| f["label"].as_str().unwrap().to_string()).collect();
            (v["file"].as_str().unwrap().to_string(), labels)
        })
        .collect()
}

fn distinct(a: &Value, b: &Value) -> bool {
    a.to_string() != b.to_string()
}

#[test]
fn the_kiosk_page_shows_the_current_faces_and_reconnects_by_itself() {
    let Some(chromium) = find_chromium() else {
        crate::mien::missing("kiosk page in a browser", "chromium is not installed (apt-get install chromium)");
        return;
    };
    let expected = labels_by_file();
    assert!(expected.values().any(|labels| !labels.is_empty()), "{expected:?}");

    // Slow enough that a snapshot of the page is of one frame; display names from the command line.
    let mut args = photo_loop_args("4");
    args.extend(["--label-name".to_string(), "happy=fröhlich".into(), "--preview".into()]);
    let mut mien = Mien::start(&strs(&args));
    let mut browser = Browser::open(&chromium, &mien.url);

    // The labels of the frame the page shows, within 10 s; and, for a photo without a face, the
    // "no face" state.
    let started = Instant::now();
    let mut last = Value::Null;
    let mut matched = None;
    let mut saw_no_face = false;
    while matched.is_none() || !saw_no_face {
        let shown = browser.shown();
        let file = shown["file"].as_str().unwrap_or_default().to_string();
        let labels: Vec<String> = serde_json::from_value(shown["labels"].clone()).unwrap_or_default();
        if let Some(want) = expected.get(&file) {
            assert_eq!(&labels, want, "the page shows {shown} for {file}");
            if want.is_empty() {
                assert_eq!(shown["state"], "no-face", "{shown}");
                saw_no_face = true;
            } else {
                assert_eq!(shown["state"], "ok", "{shown}");
                matched.get_or_insert(shown.clone());
            }
        }
        if distinct(&shown, &last) {
            last = shown;
        }
        assert!(
            matched.is_some() || started.elapsed() < Duration::from_secs(10),
            "no face label on the page within 10 s; last seen {last}"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "no photo without a face shown as such; last seen {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let matched = matched.unwrap();
    // Display names are what the cards say.
    for (label, shown) in matched["labels"].as_array().unwrap().iter().zip(matched["shown"].as_array().unwrap()) {
        let want = if label == "happy" { "fröhlich" } else { label.as_str().unwrap() };
        assert_eq!(shown.as_str().unwrap(), want);
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiosk");
    std::fs::create_dir_all(&dir).unwrap();
    for (w, h) in [(800, 480), (1920, 1080)] {
        let path = dir.join(format!("kiosk-{w}x{h}.png"));
        // With faces, and the preview behind their boxes.
        let shot = browser.screenshot(w, h, &path, |shown| {
            shown["labels"].as_array().is_some_and(|l| !l.is_empty()) && shown["preview"] == shown["frame"]
        });
        assert_eq!(shot.dimensions(), (w, h), "{}", path.display());
        // Not a blank page: the background and at least the text and bars' colours.
        let mut colours: Vec<[u8; 4]> = shot.pixels().map(|p| p.0).collect();
        colours.sort_unstable();
        colours.dedup();
        assert!(colours.len() > 50, "{} has {} colours", path.display(), colours.len());
        eprintln!("kiosk screenshot: {}", path.display());
    }

    // The server goes away: the page says so and keeps trying.
    let port = mien.addr.port();
    assert!(mien.terminate(Duration::from_secs(15)).success());
    let started = Instant::now();
    let gone = loop {
        let shown = browser.shown();
        if shown["state"] == "disconnected" {
            break shown;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no reconnecting state within 10 s: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(gone["title"].as_str().unwrap().contains("reconnecting"), "{gone}");
    let path = dir.join("kiosk-800x480-server-gone.png");
    browser.screenshot(800, 480, &path, |_| true);

    // A server back on the same port: the page shows frames again without being reloaded.
    let mut args = photo_loop_args("4");
    *args.last_mut().unwrap() = format!("127.0.0.1:{port}");
    let _back = Mien::start(&strs(&args));
    let started = Instant::now();
    loop {
        let shown = browser.shown();
        if matches!(shown["state"].as_str(), Some("ok" | "no-face")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the page did not reconnect within 20 s: {shown}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
