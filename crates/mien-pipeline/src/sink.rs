//! Where results go. Every output (terminal, JSON lines, and later HTTP or MQTT) is a [`Sink`]; the
//! pipeline knows no other way out.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pipeline::{FrameResult, SCHEMA};
use crate::runner::RunSummary;
use crate::source::SourceFrame;

/// Something that happened besides a processed frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// The run started.
    Started {
        /// The source.
        source: String,
        /// Classifier plan.
        classifier: String,
        /// Detector plan.
        detector: String,
        /// Where the kiosk page and API are served (`mien run --serve`), as actually bound.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// An input was skipped (unreadable image, corrupt MJPEG frame, cut-off video frame).
    Skipped {
        /// Why.
        reason: String,
    },
    /// The camera went away; mien is retrying.
    CameraLost {
        /// Why.
        reason: String,
    },
    /// The camera is back.
    CameraRestored {
        /// What was reopened.
        source: String,
    },
}

/// A destination for results.
pub trait Sink {
    /// Called with each processed frame's image, just before [`Sink::frame`] with its result. Only sinks
    /// that show the picture (a preview) need it.
    fn image(&mut self, frame: &SourceFrame) -> std::io::Result<()> {
        let _ = frame;
        Ok(())
    }

    /// Called for every processed frame, faces or not.
    fn frame(&mut self, result: &FrameResult) -> std::io::Result<()>;

    /// Called for events other than frames.
    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        let _ = notice;
        Ok(())
    }

    /// Called once at the end of a run.
    fn finish(&mut self, summary: &RunSummary) -> std::io::Result<()> {
        let _ = summary;
        Ok(())
    }
}

/// One JSON object per line: `frame` lines ([`FrameResult`]), `notice` lines, and a last `summary`
/// line. Every line carries `schema` and `type`.
pub struct JsonLinesSink<W: Write> {
    out: W,
}

impl<W: Write> JsonLinesSink<W> {
    /// Writes to `out` (flushed after every line, so readers see frames as they happen).
    pub fn new(out: W) -> JsonLinesSink<W> {
        JsonLinesSink { out }
    }

    fn line(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// A notice or summary as a JSON line carries it: `schema`, `type`, then the body's fields.
#[derive(Serialize)]
pub struct Tagged<'a, T: Serialize> {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// `notice` or `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The notice or summary.
    #[serde(flatten)]
    pub body: &'a T,
}

impl<'a> Tagged<'a, Notice> {
    /// A notice, tagged.
    pub fn notice(body: &'a Notice) -> Self {
        Tagged { schema: SCHEMA, kind: "notice", body }
    }
}

impl<'a> Tagged<'a, RunSummary> {
    /// The summary, tagged.
    pub fn summary(body: &'a RunSummary) -> Self {
        Tagged { schema: SCHEMA, kind: "summary", body }
    }
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn frame(&mut self, result: &FrameResult) -> std::io::Result<()> {
        self.line(result)
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        self.line(&Tagged::notice(notice))
    }

    fn finish(&mut self, summary: &RunSummary) -> std::io::Result<()> {
        self.line(&Tagged::summary(summary))
    }
}

/// The default human view: on a terminal, a screen redrawn at most ten times a second with every
/// face, its label and score, the frame rate and dropped frames; piped, one line per frame.
pub struct TerminalSink<W: Write> {
    out: W,
    live: bool,
    last_draw: Option<Instant>,
    frames: u64,
    started: Instant,
    verbose: bool,
    /// Where the page and API are served, shown on the live screen (which clears the notice's line).
    url: Option<String>,
}

impl<W: Write> TerminalSink<W> {
    /// A view on `out`; `live` redraws in place (use [`TerminalSink::stdout`] to decide from the
    /// terminal), `verbose` adds per-stage timings.
    pub fn new(out: W, live: bool, verbose: bool) -> TerminalSink<W> {
        TerminalSink { out, live, last_draw: None, frames: 0, started: Instant::now(), verbose, url: None }
    }
}

impl TerminalSink<std::io::Stdout> {
    /// A view on standard output, live when it is a terminal.
    pub fn stdout(verbose: bool) -> TerminalSink<std::io::Stdout> {
        let out = std::io::stdout();
        let live = out.is_terminal();
        TerminalSink::new(out, live, verbose)
    }
}

fn bar(score: f32) -> String {
    let filled = (score.clamp(0.0, 1.0) * 20.0).round() as usize;
    format!("{}{}", "#".repeat(filled), ".".repeat(20 - filled))
}

impl<W: Write> Sink for TerminalSink<W> {
    fn frame(&mut self, r: &FrameResult) -> std::io::Result<()> {
        self.frames += 1;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let fps = self.frames as f64 / elapsed;
        let timings = if self.verbose {
            let t = &r.timings;
            format!(
                "  [detect {:.1} ms, crop {:.1} ms, classify {:.1} ms, track {:.2} ms]",
                t.detect_ms, t.crop_ms, t.classify_ms, t.track_ms
            )
        } else {
            String::new()
        };
        if !self.live {
            let faces = if r.faces.is_empty() {
                "no face".to_string()
            } else {
                r.faces
                    .iter()
                    .map(|f| format!("#{} {} {:.2}", f.track, f.label, f.score))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let name = r.file.as_ref().map(|f| format!(" {}", f.display())).unwrap_or_default();
            return writeln!(self.out, "frame {}{name}: {faces}{timings}", r.frame);
        }
        if self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return Ok(());
        }
        self.last_draw = Some(Instant::now());
        let mut screen = String::new();
        screen.push_str("\x1b[H\x1b[2J");
        screen.push_str(&format!(
            "mien  {}  {}x{}  frame {}  {fps:.1} fps  dropped {}\n\n",
            r.source, r.width, r.height, r.frame, r.dropped
        ));
        if let Some(url) = &self.url {
            screen.push_str(&format!("page and API: {url}\n\n"));
        }
        if r.faces.is_empty() {
            screen.push_str("  no face\n");
        }
        for f in &r.faces {
            screen.push_str(&format!(
                "  #{:<4} {:<10} {:.2} {}   box {:.0},{:.0} {:.0}x{:.0}\n",
                f.track,
                f.label,
                f.score,
                bar(f.score),
                f.rect.x,
                f.rect.y,
                f.rect.width,
                f.rect.height
            ));
        }
        if !timings.is_empty() {
            screen.push_str(&format!("\n{timings}\n"));
        }
        screen.push_str("\nCtrl-C to stop\n");
        self.out.write_all(screen.as_bytes())?;
        self.out.flush()
    }

    fn notice(&mut self, notice: &Notice) -> std::io::Result<()> {
        match notice {
            Notice::Started { source, classifier, detector, url } => {
                self.url.clone_from(url);
                writeln!(self.out, "reading {source}; classifier {classifier}; detector {detector}")?;
                match url {
                    Some(url) => writeln!(self.out, "serving the kiosk page and API at {url}"),
                    None => Ok(()),
                }
            }
            Notice::Skipped { reason } => writeln!(self.out, "skipped: {reason}"),
            Notice::CameraLost { reason } => writeln!(self.out, "camera lost: {reason}; retrying"),
            Notice::CameraRestored { source } => writeln!(self.out, "camera back: {source}"),
        }
    }

    fn finish(&mut self, s: &RunSummary) -> std::io::Result<()> {
        writeln!(
            self.out,
            "{} frames in {:.1} s ({:.1} fps), {} faces, {} tracks, {} dropped, {} skipped; stopped: {}",
            s.frames, s.elapsed_s, s.fps, s.faces, s.tracks, s.dropped, s.skipped, s.stopped_by
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{FaceResult, StageTimings};
    use mien_image::{PixelRect, Rect};

    fn result(faces: Vec<FaceResult>) -> FrameResult {
        FrameResult {
            schema: SCHEMA,
            kind: "frame",
            source: "test".into(),
            frame: 7,
            timestamp_ms: 700.0,
            file: Some("a.png".into()),
            width: 64,
            height: 48,
            faces,
            ended_tracks: vec![],
            dropped: 3,
            timings: StageTimings::default(),
        }
    }

    fn face(track: u64, label: &str, score: f32) -> FaceResult {
        FaceResult {
            track,
            rect: Rect::new(1.0, 2.0, 10.0, 10.0),
            crop: PixelRect { x: 0, y: 1, width: 12, height: 12 },
            detection_score: 0.9,
            label: label.into(),
            score,
            probabilities: [(label.to_string(), score)].into_iter().collect(),
            frame_label: label.into(),
            frame_score: score,
        }
    }

    #[test]
    fn piped_terminal_output_is_one_line_per_frame() {
        let mut out = Vec::new();
        let mut sink = TerminalSink::new(&mut out, false, false);
        sink.frame(&result(vec![])).unwrap();
        sink.frame(&result(vec![face(1, "happy", 0.8), face(2, "sad", 0.61)])).unwrap();
        sink.notice(&Notice::CameraLost { reason: "gone".into() }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "frame 7 a.png: no face\nframe 7 a.png: #1 happy 0.80, #2 sad 0.61\ncamera lost: gone; retrying\n"
        );
    }

    #[test]
    fn live_terminal_view_redraws_in_place_with_bars() {
        let mut out = Vec::new();
        let mut sink = TerminalSink::new(&mut out, true, true);
        let started = Notice::Started {
            source: "s".into(),
            classifier: "c".into(),
            detector: "d".into(),
            url: Some("http://127.0.0.1:8080/".into()),
        };
        sink.notice(&started).unwrap();
        sink.frame(&result(vec![face(4, "neutral", 0.5)])).unwrap();
        let text = String::from_utf8(out).unwrap();
        let text = &text[text.find("\x1b[H").unwrap()..];
        assert!(text.starts_with("\x1b[H\x1b[2J"), "{text:?}");
        assert!(text.contains("page and API: http://127.0.0.1:8080/"), "{text}");
        assert!(text.contains("#4    neutral    0.50 ##########.........."), "{text}");
        assert!(text.contains("dropped 3") && text.contains("[detect"), "{text}");
        assert_eq!(bar(0.0), ".".repeat(20));
        assert_eq!(bar(1.5), "#".repeat(20));
    }

    #[test]
    fn json_lines_carry_schema_and_type() {
        let mut out = Vec::new();
        let mut sink = JsonLinesSink::new(&mut out);
        sink.frame(&result(vec![face(1, "happy", 0.8)])).unwrap();
        sink.notice(&Notice::Skipped { reason: "bad".into() }).unwrap();
        sink.finish(&RunSummary::default()).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "frame");
        assert_eq!(lines[0]["faces"][0]["box"]["width"], 10.0);
        assert_eq!((lines[1]["type"].as_str(), lines[1]["event"].as_str()), (Some("notice"), Some("skipped")));
        assert_eq!(lines[2]["type"], "summary");
        assert!(lines.iter().all(|l| l["schema"] == SCHEMA));
    }
}
