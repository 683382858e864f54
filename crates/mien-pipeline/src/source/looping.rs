//! `--loop`: a file source replayed forever, for demos, kiosks in a shop window and tests.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{FrameSource, SourceError, SourceEvent};

/// Opens a fresh copy of a file source, once per pass.
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A file source read again from the start each time it ends. Frame indices and timestamps keep
/// increasing across passes (sinks see one long stream; tracks expire across the seam as they would in
/// a video). A pass without a single frame ends the loop instead of spinning.
pub struct LoopingSource {
    reopen: Reopen,
    current: Box<dyn FrameSource>,
    description: String,
    passes: u64,
    frames_this_pass: u64,
    /// Added to the current pass's indices and timestamps.
    index_offset: u64,
    time_offset: Duration,
    /// The last frame returned: its index and timestamp (after the offsets).
    last: Option<(u64, Duration)>,
    /// The gap between passes: the last interval between frames, so the timeline stays even.
    last_interval: Duration,
    dropped_before: u64,
}

impl LoopingSource {
    /// Loops the source `reopen` opens (it is called once now, and at the end of each pass).
    pub fn new(mut reopen: Reopen) -> Result<LoopingSource, SourceError> {
        let current = reopen()?;
        let description = format!("{} (looped)", current.describe());
        Ok(LoopingSource {
            reopen,
            current,
            description,
            passes: 1,
            frames_this_pass: 0,
            index_offset: 0,
            time_offset: Duration::ZERO,
            last: None,
            last_interval: Duration::from_millis(100),
            dropped_before: 0,
        })
    }

    /// Passes started so far (1 during the first).
    pub fn passes(&self) -> u64 {
        self.passes
    }
}

impl FrameSource for LoopingSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn next_event(&mut self, stop: &AtomicBool) -> Result<SourceEvent, SourceError> {
        loop {
            match self.current.next_event(stop)? {
                SourceEvent::Frame(mut frame) => {
                    frame.index += self.index_offset;
                    frame.timestamp += self.time_offset;
                    if let (Some((_, previous)), true) = (self.last, self.frames_this_pass > 0) {
                        self.last_interval = frame.timestamp.saturating_sub(previous);
                    }
                    self.frames_this_pass += 1;
                    self.last = Some((frame.index, frame.timestamp));
                    return Ok(SourceEvent::Frame(frame));
                }
                SourceEvent::End => {
                    if self.frames_this_pass == 0 || stop.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        return Ok(SourceEvent::End);
                    }
                    self.dropped_before += self.current.dropped();
                    self.current = (self.reopen)()?;
                    self.passes += 1;
                    self.frames_this_pass = 0;
                    let (index, time) = self.last.unwrap_or_default();
                    self.index_offset = index + 1;
                    self.time_offset = time + self.last_interval;
                }
                other => return Ok(other),
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_before + self.current.dropped()
    }

    fn is_temporal(&self) -> bool {
        self.current.is_temporal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::testing::Grey as Counted;

    #[test]
    fn indices_and_timestamps_keep_increasing_across_passes() {
        let mut source = LoopingSource::new(Box::new(|| {
            Ok(Box::new(Counted { left: 3, next: 0 }) as Box<dyn FrameSource>)
        }))
        .unwrap();
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        for _ in 0..8 {
            match source.next_event(&stop).unwrap() {
                SourceEvent::Frame(f) => seen.push((f.index, f.timestamp.as_millis() as u64)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, (0..8).map(|i| (i, 100 * i)).collect::<Vec<_>>());
        assert_eq!(source.passes(), 3);
        assert_eq!(source.describe(), "counted (looped)");
    }

    #[test]
    fn a_pass_without_frames_ends_the_loop_and_stop_ends_it_at_the_seam() {
        let mut empty = LoopingSource::new(Box::new(|| {
            Ok(Box::new(Counted { left: 0, next: 0 }) as Box<dyn FrameSource>)
        }))
        .unwrap();
        assert!(matches!(
            empty.next_event(&AtomicBool::new(false)).unwrap(),
            SourceEvent::End
        ));

        let mut source = LoopingSource::new(Box::new(|| {
            Ok(Box::new(Counted { left: 1, next: 0 }) as Box<dyn FrameSource>)
        }))
        .unwrap();
        let stop = AtomicBool::new(false);
        assert!(matches!(
            source.next_event(&stop).unwrap(),
            SourceEvent::Frame(_)
        ));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            source.next_event(&stop).unwrap(),
            SourceEvent::End
        ));
    }
}
