//! Redaction: every secret value psctl handles is registered here, and every printer scrubs its
//! text through it before writing, so no Secret value can reach stdout, stderr or a log line.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use base64::Engine as _;

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Values shorter than this are not scrubbed: replacing every `1` or `ok` in the output would
/// make it unreadable, and such values carry no secrecy worth protecting.
const MIN_SECRET_LEN: usize = 4;

/// A shared set of secret values to scrub. Cloning shares the set.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.secrets.read().map(|s| s.len()).unwrap_or(0);
        write!(f, "Redactor({count} values)")
    }
}

impl Redactor {
    /// Registers a secret value, plus its base64 form (how Kubernetes shows Secret data).
    pub fn register(&self, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let mut secrets = match self.secrets.write() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave the Vec inconsistent: keep using it.
            Err(poisoned) => poisoned.into_inner(),
        };
        for candidate in [value.to_owned(), encoded] {
            if !secrets.contains(&candidate) {
                secrets.push(candidate);
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Registers every value of a Kubernetes Secret's `data` (already decoded bytes).
    pub fn register_bytes(&self, value: &[u8]) {
        if let Ok(text) = std::str::from_utf8(value) {
            self.register(text);
            let trimmed = text.trim();
            if trimmed != text {
                self.register(trimmed);
            }
        }
    }

    /// `text` with every registered value replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let secrets = match self.secrets.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = Cow::Borrowed(text);
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }
}

/// A `tracing` writer: each log event is gathered whole, scrubbed through the [`Redactor`],
/// then written to its sink in one piece.
#[derive(Clone)]
pub struct RedactingWriter<W> {
    redactor: Redactor,
    sink: W,
}

impl RedactingWriter<fn() -> std::io::Stderr> {
    /// Log lines to stderr.
    pub fn stderr(redactor: Redactor) -> Self {
        Self {
            redactor,
            sink: std::io::stderr,
        }
    }
}

impl<W> RedactingWriter<W> {
    /// Log lines to whatever `sink` makes (tests).
    pub fn new(redactor: Redactor, sink: W) -> Self {
        Self { redactor, sink }
    }
}

/// One event being written: bytes gathered until it is dropped.
pub struct RedactedEvent<O: std::io::Write> {
    redactor: Redactor,
    buffer: Vec<u8>,
    sink: O,
}

impl<O: std::io::Write> std::io::Write for RedactedEvent<O> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<O: std::io::Write> Drop for RedactedEvent<O> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let _ = self.sink.write_all(self.redactor.scrub(&text).as_bytes());
        let _ = self.sink.flush();
    }
}

impl<'a, W, O> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter<W>
where
    W: Fn() -> O + 'static,
    O: std::io::Write,
{
    type Writer = RedactedEvent<O>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedEvent {
            redactor: self.redactor.clone(),
            buffer: Vec::new(),
            sink: (self.sink)(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_scrubbed_like_every_other_line() {
        use std::sync::Mutex;
        let redactor = Redactor::default();
        let written: Arc<Mutex<Vec<u8>>> = Arc::default();
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared(written.clone());
        let writer = RedactingWriter::new(redactor.clone(), move || sink.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        // Registered after the subscriber exists, as psctl registers a database URL late.
        redactor.register("postgres://app:hunter22@db/app");
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                url = "postgres://app:hunter22@db/app",
                "cannot reach postgres://app:hunter22@db/app"
            );
        });
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(text.contains("cannot reach [REDACTED]"), "{text}");
        assert!(!text.contains("hunter22"), "{text}");
    }

    #[test]
    fn registered_values_and_their_base64_are_scrubbed() {
        let redactor = Redactor::default();
        redactor.register("postgres://app:hunter22@db/app");
        let encoded =
            base64::engine::general_purpose::STANDARD.encode("postgres://app:hunter22@db/app");
        let text = format!("url=postgres://app:hunter22@db/app data={encoded} ok");
        assert_eq!(redactor.scrub(&text), "url=[REDACTED] data=[REDACTED] ok");
    }

    #[test]
    fn overlapping_secrets_are_replaced_whole() {
        let redactor = Redactor::default();
        redactor.register("abcd");
        redactor.register("abcdefgh");
        assert_eq!(
            redactor.scrub("x abcdefgh y abcd"),
            "x [REDACTED] y [REDACTED]"
        );
    }

    #[test]
    fn untouched_text_is_borrowed_and_tiny_values_ignored() {
        let redactor = Redactor::default();
        redactor.register("1");
        assert!(matches!(
            redactor.scrub("replicas 1"),
            Cow::Borrowed("replicas 1")
        ));
    }

    #[test]
    fn debug_never_shows_the_values() {
        let redactor = Redactor::default();
        redactor.register("s3cr3t-value");
        assert_eq!(format!("{redactor:?}"), "Redactor(2 values)");
    }
}
