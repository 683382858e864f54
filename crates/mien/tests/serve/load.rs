//! A hundred event-stream clients connecting and leaving for 30 s (`MIEN_LOAD_SECONDS`) while the
//! pipeline runs the tiny plan over the committed photos: no client gets an error, and once they have
//! left the process has the threads and file descriptors it had before. (The frame-rate cost of
//! clients is a benchmark figure, docs/BENCHMARKS.md, not asserted here.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, get, EventStream};
use crate::mien::{photo_loop_args, strs, wait_for, Mien};

/// Threads and open file descriptors of a process.
fn resources(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).count();
    (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")))
}

#[test]
fn a_hundred_clients_coming_and_going_leave_no_threads_or_descriptors_behind() {
    let seconds: u64 = std::env::var("MIEN_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut args = photo_loop_args("20");
    // A client that leaves keeps its place until the server notices, at the next frames written to
    // it (a write into a closed connection succeeds once): with clients leaving every few frames there
    // are more places taken than clients connected.
    args.extend(["--max-clients".to_string(), "300".into()]);
    let mien = Mien::start(&strs(&args));
    let addr = mien.addr;
    wait_for(Duration::from_secs(30), "a first frame", || (get(addr, "/api/v1/latest").status == 200).then_some(()));
    // Warm: one client came and went, so anything created once (buffers, timers) exists already.
    let mut warm = EventStream::open(addr, "/api/v1/events", &[]).unwrap();
    warm.next_frame();
    warm.close();
    wait_for(Duration::from_secs(10), "the warm-up client to leave", || {
        (client::metric(&get(addr, "/metrics").text(), "mien_sse_clients") == 0.0).then_some(())
    });
    // Its connection closes just after its stream ends.
    std::thread::sleep(Duration::from_secs(1));
    let before = resources(mien.pid());
    let frames_before = client::metric(&get(addr, "/metrics").text(), "mien_frames_total");

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sessions = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..100u64)
        .map(|i| {
            let (errors, sessions, received) = (errors.clone(), sessions.clone(), received.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while Instant::now() < deadline {
                    round += 1;
                    match EventStream::open(addr, "/api/v1/events", &[]) {
                        Ok(mut stream) if stream.status == 200 => {
                            // Between one and five frames, then away: some leave mid-stream.
                            for _ in 0..1 + (i + round) % 5 {
                                match stream.next_event() {
                                    Ok(Some(_)) => {
                                        received.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(None) => {
                                        errors.lock().unwrap().push("stream ended early".into());
                                        break;
                                    }
                                    Err(e) => {
                                        errors.lock().unwrap().push(format!("reading: {e}"));
                                        break;
                                    }
                                }
                            }
                            stream.close();
                            sessions.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(stream) => errors.lock().unwrap().push(format!("status {}", stream.status)),
                        Err(e) => errors.lock().unwrap().push(format!("connecting: {e}")),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let mut mien = mien;
    if let Some(status) = mien.child.try_wait().unwrap() {
        panic!("mien exited during the load ({status:?}); stderr:\n{}", mien.stderr());
    }
    let metrics = get(addr, "/metrics").text();
    let frames = client::metric(&metrics, "mien_frames_total") - frames_before;
    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "load: {} sessions, {} events received, {frames} frames processed in {seconds} s ({:.1} fps), {} errors",
        sessions.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        frames / seconds as f64,
        errors.len()
    );
    assert!(errors.is_empty(), "{} client errors, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(sessions.load(Ordering::Relaxed) >= 100, "every client got through at least once");
    assert_eq!(client::metric(&metrics, "mien_sse_rejected_total"), 0.0);

    wait_for(Duration::from_secs(20), "every client to be gone", || {
        (client::metric(&get(addr, "/metrics").text(), "mien_sse_clients") == 0.0).then_some(())
    });
    // Connections close a moment after their last request.
    let grown = |after: (usize, usize)| after.0 > before.0 || after.1 > before.1;
    let mut after = resources(mien.pid());
    let settled = Instant::now() + Duration::from_secs(10);
    while grown(after) && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(100));
        after = resources(mien.pid());
    }
    assert!(!grown(after), "(threads, file descriptors): {before:?} before the clients, {after:?} after they left");
    drop(mien);
}
