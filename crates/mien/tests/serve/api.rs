//! The endpoints, limits and security rules of `mien run --serve`.

use std::io::Write;
use std::time::Duration;

use crate::client::{self, get, request, EventStream};
use crate::mien::{photo_loop_args, root, strs, wait_for, Mien};

fn serving_photos(extra: &[&str]) -> Mien {
    let mut args = photo_loop_args("20");
    args.extend(extra.iter().map(|s| s.to_string()));
    Mien::start(&strs(&args))
}

#[test]
fn endpoints_answer_as_documented() {
    let mut mien = serving_photos(&[]);
    let addr = mien.addr;

    let latest = wait_for(Duration::from_secs(30), "a first frame", || {
        let r = get(addr, "/api/v1/latest");
        (r.status == 200).then_some(r)
    });
    assert_eq!(latest.header("content-type"), Some("application/json"));
    assert_eq!(latest.header("cache-control"), Some("no-store"));
    let frame = latest.json();
    assert_eq!((frame["schema"].as_str(), frame["type"].as_str()), (Some("mien.run/1"), Some("frame")));
    assert!(frame["faces"].is_array() && frame["width"].as_u64().unwrap() > 0, "{frame}");

    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'none'"));
    let html = page.text();
    assert!(html.contains("<script id=\"mien-config\"") && html.contains("\"labels\":[\"angry\""), "{html}");

    let health = get(addr, "/api/v1/health");
    assert_eq!(health.status, 200, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "ok");
    assert!(body["frames"].as_u64().unwrap() >= 1 && body["fps"].as_f64().unwrap() >= 0.0, "{body}");
    assert_eq!(request(addr, "HEAD", "/api/v1/health", &[]).status, 200);

    // Counters only grow; histograms count every frame in every stage.
    let first = get(addr, "/metrics");
    assert_eq!(first.status, 200);
    assert!(first.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let first = first.text();
    let frames_then = client::metric(&first, "mien_frames_total");
    let second = wait_for(Duration::from_secs(30), "more frames", || {
        let text = get(addr, "/metrics").text();
        (client::metric(&text, "mien_frames_total") > frames_then).then_some(text)
    });
    let frames = (frames_then, client::metric(&second, "mien_frames_total"));
    assert!(frames.0 >= 1.0 && frames.1 > frames.0, "frames {frames:?}");
    assert!(client::metric(&second, "mien_faces_total") >= client::metric(&first, "mien_faces_total"));
    for stage in ["detect", "crop", "classify", "track"] {
        let count = client::metric(&second, &format!("mien_stage_seconds_count{{stage=\"{stage}\"}}"));
        let all = client::metric(&second, &format!("mien_stage_seconds_bucket{{le=\"+Inf\",stage=\"{stage}\"}}"));
        assert!(count >= frames.1 && all == count, "{stage}: {count} {all} {}", frames.1);
    }
    for name in ["mien_skipped_inputs_total", "mien_camera_losses_total", "mien_dropped_frames_total", "mien_sse_clients", "mien_fps"] {
        client::metric(&second, name);
    }
    let info = client::metrics(&second).into_iter().find(|(n, _)| n.starts_with("mien_build_info{")).expect("build info");
    assert!(info.0.contains("classifier=\"") && info.0.contains("tiny-vit.mien") && info.1 == 1.0, "{info:?}");
    assert!(second.trim_end().ends_with("# EOF"));

    // Unknown paths, wrong methods, no CORS by default, preview off by default.
    let missing = get(addr, "/api/v2/latest");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().starts_with("no such endpoint: /api/v2/latest"));
    let post = request(addr, "POST", "/api/v1/latest", &[("content-length", "0")]);
    assert_eq!(post.status, 405);
    assert!(post.header("allow").unwrap().contains("GET"));
    assert!(latest.header("access-control-allow-origin").is_none());
    let preview = get(addr, "/api/v1/preview.jpg");
    assert_eq!(preview.status, 404);
    assert!(preview.json()["error"].as_str().unwrap().contains("preview is off"));

    // A page elsewhere reaching the loopback server through DNS rebinding names another host.
    let raw = client::send_raw(addr, b"GET /api/v1/latest HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(raw.status, 403, "{}", raw.text());

    // Oversized requests: a head over the limit, a declared body over the limit.
    let big = format!("GET /api/v1/latest HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n", "a".repeat(20_000));
    let too_big = client::send_raw(addr, big.as_bytes()).unwrap();
    assert_eq!(too_big.status, 431);
    let body = request(addr, "GET", "/api/v1/latest", &[("content-length", "100000")]);
    assert_eq!(body.status, 413);
    assert_eq!(body.json()["error"], "request body over 16384 bytes");

    // SIGTERM with the server busy: a clean, prompt stop and a summary.
    let _stream = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
    let status = mien.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}; stderr:\n{}", mien.stderr());
    let lines = mien.lines.lock().unwrap().clone();
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!((summary["type"].as_str(), summary["stopped_by"].as_str()), (Some("summary"), Some("signal")));
}

#[test]
fn event_streams_carry_frames_in_order_and_are_limited_in_number() {
    let mien = serving_photos(&["--max-clients", "2"]);
    let addr = mien.addr;
    let mut stream = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header_value("content-type"), Some("text/event-stream"));
    let mut numbers = Vec::new();
    for _ in 0..12 {
        let frame = stream.next_frame();
        assert_eq!(frame["schema"], "mien.run/1");
        numbers.push(frame["frame"].as_u64().unwrap());
    }
    assert_eq!(stream.retry, Some(2000));
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "frame numbers not increasing: {numbers:?}");
    // Twenty frames a second, none lost by a reader that keeps up.
    assert!(numbers.windows(2).filter(|w| w[1] != w[0] + 1).count() <= 1, "gaps: {numbers:?}");

    let second = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
    assert_eq!(second.status, 200);
    let third = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
    assert_eq!(third.status, 503);
    assert_eq!(third.header_value("retry-after"), Some("5"));
    assert_eq!(client::metric(&get(addr, "/metrics").text(), "mien_sse_rejected_total"), 1.0);

    // A client that leaves frees its place (noticed at the next frame written to it).
    second.close();
    wait_for(Duration::from_secs(10), "a freed place", || {
        let next = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
        (next.status == 200).then_some(())
    });
    drop(mien);
}

#[test]
fn a_token_guards_everything_but_the_page_and_health() {
    let token = "kiosk-token-1234";
    let mien = serving_photos(&["--api-token", token]);
    let addr = mien.addr;
    assert_eq!(get(addr, "/").status, 200);
    let health = get(addr, "/api/v1/health").status;
    assert!(health == 200 || health == 503, "{health}");
    for path in ["/api/v1/latest", "/api/v1/events", "/metrics", "/api/v1/preview.jpg", "/nope"] {
        let refused = get(addr, path);
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        let wrong = request(addr, "GET", path, &[("Authorization", "Bearer kiosk-token-1235")]);
        assert_eq!(wrong.status, 401, "{path}");
    }
    let bearer = format!("Bearer {token}");
    wait_for(Duration::from_secs(30), "a frame with the token", || {
        (request(addr, "GET", "/api/v1/latest", &[("Authorization", &bearer)]).status == 200).then_some(())
    });
    assert_eq!(request(addr, "GET", "/metrics", &[("Authorization", &bearer)]).status, 200);
    // The page's EventSource cannot send headers: the query parameter does.
    let mut stream = EventStream::open(addr, &format!("/api/v1/events?access_token={token}"), &[]).unwrap();
    assert_eq!(stream.status, 200);
    stream.next_frame();
}

#[test]
fn a_token_from_the_environment_works_and_bad_options_are_one_line_errors() {
    let mut args = photo_loop_args("20");
    args.push("--api-token".into());
    args.push("short".into());
    let out = crate::mien::command().arg("run").args(&args).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "mien: --api-token: expected at least 8 printable ASCII characters without spaces");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut args = photo_loop_args("20");
    *args.last_mut().unwrap() = format!("127.0.0.1:{port}");
    let out = crate::mien::command().arg("run").args(&args).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("mien: --serve: cannot listen on 127.0.0.1:{port}: ")), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = crate::mien::command()
        .args(["run", "--source", "/dev/video99", "--loop", "--serve", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "mien: --loop: only for files (a folder, images or a video); a camera runs until stopped"
    );
    let out = crate::mien::command()
        .args(["run", "--source"])
        .arg(root().join("tests/data/photos"))
        .args(["--label-name", "glad=froh", "--serve", "127.0.0.1:0", "--plan"])
        .arg(crate::mien::tiny_plan())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "mien: --serve: --label-name: `glad` is not one of the plan's labels (angry, disgust, fear, happy, neutral, sad, surprise)"
    );

    let mien = Mien::start_with(&strs(&photo_loop_args("20")), |c| {
        c.env("MIEN_API_TOKEN", "from-the-environment");
    });
    assert_eq!(get(mien.addr, "/metrics").status, 401);
    assert_eq!(request(mien.addr, "GET", "/metrics", &[("Authorization", "Bearer from-the-environment")]).status, 200);
}

/// This machine's address on its first non-loopback interface (the route to a documentation-only
/// address; nothing is sent).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn the_preview_goes_to_this_machine_only_unless_any_is_given() {
    let Some(other) = non_loopback_address() else {
        crate::mien::missing("the_preview_goes_to_this_machine_only_unless_any_is_given", "this machine has no non-loopback IPv4 address");
        return;
    };
    let mut args = photo_loop_args("20");
    *args.last_mut().unwrap() = "0.0.0.0:0".into();
    args.extend(["--preview".to_string(), "--preview-width".into(), "160".into()]);
    let mien = Mien::start(&strs(&args));
    assert!(mien.stderr().is_empty() || mien.stderr().contains("reachable from other machines"));
    let jpeg = wait_for(Duration::from_secs(30), "a preview", || {
        let r = get(mien.addr, "/api/v1/preview.jpg");
        (r.status == 200).then_some(r)
    });
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory(&jpeg.body).unwrap();
    assert_eq!(image.width(), 160);
    let refused = client::get_via(other, mien.addr, "/api/v1/preview.jpg");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("this machine only"));
    // The rest of the API is there for other machines when bound to them.
    assert_eq!(client::get_via(other, mien.addr, "/api/v1/health").status, 200);
    drop(mien);

    let mut args = photo_loop_args("20");
    *args.last_mut().unwrap() = "0.0.0.0:0".into();
    args.extend(["--preview".to_string(), "any".into()]);
    let mien = Mien::start(&strs(&args));
    wait_for(Duration::from_secs(30), "a preview for another machine", || {
        (client::get_via(other, mien.addr, "/api/v1/preview.jpg").status == 200).then_some(())
    });
}

/// Writes a mono YUV4MPEG2 stream into a named pipe, frame by frame, as a camera would deliver them.
struct PipedVideo {
    pipe: std::fs::File,
    frame: Vec<u8>,
}

impl PipedVideo {
    fn frame(&mut self) {
        self.pipe.write_all(b"FRAME\n").unwrap();
        self.pipe.write_all(&self.frame).unwrap();
        self.pipe.flush().unwrap();
    }
}

#[test]
fn health_turns_503_when_the_source_stalls_and_ok_when_frames_flow_again() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.y4m");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let photo = image::open(root().join("tests/data/photos/astronaut.png")).unwrap().to_luma8();
    let (w, h) = photo.dimensions();
    let plan = crate::mien::tiny_plan();

    let args = [
        "--source",
        fifo.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--threads",
        "1",
        "--serve",
        "127.0.0.1:0",
        "--stale-after",
        "1",
    ];
    // mien opens the pipe and reads the header before it reports `started`.
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        pipe.write_all(format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 Cmono\n").as_bytes()).unwrap();
        pipe
    });
    let mut mien = Mien::start(&args);
    let mut video = PipedVideo { pipe: writer.join().unwrap(), frame: photo.into_raw() };
    let addr = mien.addr;

    assert_eq!(get(addr, "/api/v1/latest").status, 204);
    let health = get(addr, "/api/v1/health");
    assert_eq!((health.status, health.json()["reason"].as_str()), (503, Some("no frame yet")));

    for _ in 0..3 {
        video.frame();
    }
    wait_for(Duration::from_secs(30), "health ok after frames", || (get(addr, "/api/v1/health").status == 200).then_some(()));
    let stalled = wait_for(Duration::from_secs(10), "health 503 once frames stop", || {
        let r = get(addr, "/api/v1/health");
        (r.status == 503).then_some(r)
    });
    let body = stalled.json();
    assert_eq!(body["status"], "stalled", "{body}");
    assert!(body["reason"].as_str().unwrap().starts_with("no frame for "), "{body}");
    assert_eq!(get(addr, "/api/v1/latest").status, 200, "the latest frame stays available");

    for _ in 0..2 {
        video.frame();
    }
    wait_for(Duration::from_secs(30), "health ok again", || (get(addr, "/api/v1/health").status == 200).then_some(()));

    // The end of the stream ends the run.
    drop(video);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = mien.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "mien kept running after its source ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", mien.stderr());
    let lines = mien.lines.lock().unwrap().clone();
    let frames = lines.iter().filter(|l| l.contains("\"type\":\"frame\"")).count();
    assert_eq!(frames, 5, "{lines:?}");
}
