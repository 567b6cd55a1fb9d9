//! Recording: every judged evaluation appended as a fixture line, its request whole unless
//! `[record] redact` says otherwise, so the same cases can be replayed offline or driven
//! again later (`shadowdiff drive`). A writer thread owns the file; the mirror hands it
//! lines over a bounded channel and never waits on disk. The file rotates by size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::config::live::RecordSettings;

/// Lines waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 8192;

/// Counters of the recording.
#[derive(Debug, Default)]
pub struct RecordStats {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the writer fell behind or failed.
    pub dropped: AtomicU64,
}

/// The handle the mirror writes through.
pub struct Recorder {
    // Std mutexes: taken for a `try_send` or at shutdown, never across an await.
    sender: Mutex<Option<SyncSender<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Written and dropped lines.
    pub stats: Arc<RecordStats>,
}

/// Why the recording could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open record file {path}: {source}")]
pub struct RecordError {
    path: PathBuf,
    source: std::io::Error,
}

impl Recorder {
    /// Opens (appends to) the file and starts the writer thread.
    pub fn start(settings: RecordSettings) -> Result<Recorder, RecordError> {
        let file = open(&settings.path).map_err(|source| RecordError { path: settings.path.clone(), source })?;
        let (sender, receiver) = sync_channel::<String>(QUEUE);
        let stats = Arc::new(RecordStats::default());
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("shadowdiff-record".into())
            .spawn(move || {
                let mut output = Output::new(settings, file);
                for line in receiver {
                    match output.write(&line) {
                        Ok(()) => writer_stats.written.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "recording: write failed");
                            writer_stats.dropped.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                if let Err(e) = output.file.flush() {
                    tracing::warn!(error = %e, "recording: final flush failed");
                }
            })
            .map_err(|source| RecordError { path: PathBuf::from("(writer thread)"), source })?;
        Ok(Recorder { sender: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)), stats })
    }

    /// Queues one line (without newline); drops and counts it if the writer is behind.
    pub fn record(&self, line: String) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match sender.as_ref() {
            Some(sender) => {
                !matches!(sender.try_send(line), Err(TrySendError::Full(_) | TrySendError::Disconnected(_)))
            }
            None => false,
        };
        if !sent {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes out everything queued, flushes and closes the file; later lines are dropped.
    pub fn finish(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::warn!("recording: writer thread panicked");
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Output {
    settings: RecordSettings,
    file: BufWriter<File>,
    size: u64,
}

impl Output {
    fn new(settings: RecordSettings, file: File) -> Output {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Output { settings, file: BufWriter::new(file), size }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let bytes = line.len() as u64 + 1;
        if self.size > 0 && self.size + bytes > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += bytes;
        Ok(())
    }

    /// `path` → `path.1`, `path.1` → `path.2`, ... keeping `keep` rotated files.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.settings.path;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        if self.settings.keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            for n in (1..self.settings.keep).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(path, numbered(1))?;
        }
        self.file = BufWriter::new(open(path)?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rotates_and_flushes_on_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.jsonl");
        let recorder =
            Recorder::start(RecordSettings { path: path.clone(), max_bytes: 4096, keep: 2, redact: Vec::new() })
                .expect("start");
        let line = "x".repeat(1000);
        for _ in 0..10 {
            recorder.record(line.clone());
        }
        recorder.finish();
        assert_eq!(recorder.stats.written.load(Ordering::Relaxed), 10);
        let lines = |p: PathBuf| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
        // 4 lines of 1001 bytes fit in 4096: 10 lines → 4 + 4 + 2, the oldest rotated file kept twice.
        assert_eq!(lines(path.clone()), 2);
        assert_eq!(lines(dir.path().join("rec.jsonl.1")), 4);
        assert_eq!(lines(dir.path().join("rec.jsonl.2")), 4);
        assert!(!dir.path().join("rec.jsonl.3").exists());
    }
}
