//! Output layer: data to stdout (table or JSON), everything else to stderr.
//!
//! Every byte goes through [`Output`], which scrubs registered secrets ([`redact`]), honours
//! `NO_COLOR`, shows progress bars only on a terminal, and emits GitHub Actions annotations when
//! `GITHUB_ACTIONS=true`. Writers are injected so tests render into buffers.

pub mod github;
pub mod redact;
pub mod table;

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use redact::Redactor;

use crate::error::CommandError;

/// How data is rendered on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// The JSON document as YAML: same fields, same values.
    Yaml,
    /// JUnit XML, for results that are test-like (`psctl smoke`).
    Junit,
}

/// Data a command prints: serialisable for `-o json`, renderable as a table otherwise.
///
/// The JSON shape is a public, documented schema (docs/cli.md): add fields, never rename.
pub trait Render: Serialize {
    /// The table form, ending with a newline.
    fn render_table(&self, style: &Style) -> String;

    /// The JUnit XML form, for data that is a set of test results; `None` for everything else.
    fn render_junit(&self) -> Option<String> {
        None
    }
}

/// Presentation switches shared by every printer.
///
/// Colour is decided per stream: `psctl smoke > report.txt` on a terminal keeps colour in the
/// messages on stderr and none in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colour allowed in data on stdout (tables): see [`use_color`].
    pub color_stdout: bool,
    /// ANSI colour allowed in messages on stderr: see [`use_color`].
    pub color_stderr: bool,
    /// Emit `::error::`/`::warning::` workflow commands.
    pub github_actions: bool,
    /// Progress bars allowed (stderr is a terminal and not quiet).
    pub progress: bool,
}

impl Style {
    /// Plain style for tests and pipes.
    pub const PLAIN: Style = Style {
        color_stdout: false,
        color_stderr: false,
        github_actions: false,
        progress: false,
    };

    /// The style of this process: colour per stream from [`use_color`], annotations from
    /// `GITHUB_ACTIONS=true`, progress bars when stderr is a terminal and `verbosity >= 0`.
    pub fn detect(verbosity: i8) -> Self {
        let no_color = std::env::var_os("NO_COLOR");
        let force = std::env::var_os("CLICOLOR_FORCE");
        let stderr_tty = io::stderr().is_terminal();
        Style {
            color_stdout: use_color(
                io::stdout().is_terminal(),
                no_color.as_deref(),
                force.as_deref(),
            ),
            color_stderr: use_color(stderr_tty, no_color.as_deref(), force.as_deref()),
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            progress: stderr_tty && verbosity >= 0,
        }
    }

    /// `text` in the ANSI colour `code` when stdout may be coloured (for table cells).
    pub fn paint_data(&self, code: &str, text: &str) -> String {
        paint(self.color_stdout, code, text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        paint(self.color_stderr, code, text)
    }
}

fn paint(enabled: bool, code: &str, text: &str) -> String {
    if enabled {
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

/// Whether one stream gets ANSI colour: never when `NO_COLOR` is set to anything non-empty
/// (no-color.org), always when `CLICOLOR_FORCE` is set and not `0`, otherwise only when that
/// very stream is a terminal.
pub fn use_color(
    is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    clicolor_force: Option<&std::ffi::OsStr>,
) -> bool {
    if no_color.is_some_and(|value| !value.is_empty()) {
        return false;
    }
    if clicolor_force.is_some_and(|value| !value.is_empty() && value != "0") {
        return true;
    }
    is_terminal
}

/// `value` as YAML, through its JSON form so that `-o yaml` and `-o json` carry the same data.
/// Strings are scrubbed before they are quoted: `[REDACTED]` pasted into YAML text afterwards
/// would read back as a list.
pub fn to_yaml<T: Serialize + ?Sized>(value: &T, redactor: &Redactor) -> io::Result<String> {
    fn scrub(value: serde_json::Value, redactor: &Redactor) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(text) => Value::String(redactor.scrub(&text).into_owned()),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| scrub(item, redactor))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, item)| (redactor.scrub(&key).into_owned(), scrub(item, redactor)))
                    .collect(),
            ),
            other => other,
        }
    }
    let json = serde_json::to_value(value).map_err(io::Error::other)?;
    crate::yaml::to_string(&scrub(json, redactor)).map_err(io::Error::other)
}

/// A writer shared between clones of [`Output`].
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// The single place psctl writes to.
#[derive(Clone)]
pub struct Output {
    format: Format,
    style: Style,
    verbosity: i8,
    stdout: SharedWriter,
    stderr: SharedWriter,
    redactor: Redactor,
    /// `$GITHUB_STEP_SUMMARY` on GitHub Actions: where job summaries are appended.
    step_summary: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("format", &self.format)
            .field("style", &self.style)
            .field("verbosity", &self.verbosity)
            .finish_non_exhaustive()
    }
}

/// Result of one preflight or verification step, printed as one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Output {
    /// Output on the process's stdout/stderr with `style` (normally [`Style::detect`]).
    pub fn stdio(format: Format, style: Style, verbosity: i8) -> Self {
        let output = Self::new(
            format,
            style,
            verbosity,
            Box::new(io::stdout()),
            Box::new(io::stderr()),
        );
        match std::env::var_os("GITHUB_STEP_SUMMARY") {
            Some(path) if style.github_actions && !path.is_empty() => {
                output.with_step_summary(path.into())
            }
            _ => output,
        }
    }

    /// Appends job summaries to `path` (GitHub Actions' `$GITHUB_STEP_SUMMARY`).
    pub fn with_step_summary(mut self, path: std::path::PathBuf) -> Self {
        self.step_summary = Some(path);
        self
    }

    pub fn new(
        format: Format,
        style: Style,
        verbosity: i8,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            format,
            style,
            verbosity,
            stdout: Arc::new(Mutex::new(stdout)),
            stderr: Arc::new(Mutex::new(stderr)),
            redactor: Redactor::default(),
            step_summary: None,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn style(&self) -> Style {
        self.style
    }

    pub fn verbosity(&self) -> i8 {
        self.verbosity
    }

    /// The redactor shared by every printer; register secret values here as soon as they are read.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Prints a command's data on stdout in the selected format.
    pub fn data<R: Render>(&self, value: &R) -> io::Result<()> {
        let text = match self.format {
            Format::Json => {
                let mut json = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
                json.push('\n');
                json
            }
            Format::Yaml => to_yaml(value, &self.redactor)?,
            Format::Table => value.render_table(&self.style),
            Format::Junit => value.render_junit().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "`-o junit` is only available for test-like results (`psctl smoke`)",
                )
            })?,
        };
        self.write_stdout(&text)
    }

    /// Raw text on stdout (completion scripts, man pages): not data in a format, but still scrubbed.
    pub fn raw(&self, text: &str) -> io::Result<()> {
        self.write_stdout(text)
    }

    fn write_stdout(&self, text: &str) -> io::Result<()> {
        let scrubbed = self.redactor.scrub(text);
        let mut stdout = lock(&self.stdout);
        stdout.write_all(scrubbed.as_bytes())?;
        stdout.flush()
    }

    fn write_stderr(&self, text: &str) {
        let scrubbed = self.redactor.scrub(text);
        let mut stderr = lock(&self.stderr);
        // Diagnostics are best effort: a closed stderr must not turn success into failure.
        let _ = stderr.write_all(scrubbed.as_bytes());
        let _ = stderr.flush();
    }

    /// A progress or status line on stderr (hidden by `-q`).
    pub fn info(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            self.write_stderr(&format!("{}\n", message.as_ref()));
        }
    }

    /// Extra detail on stderr (shown with `-v`).
    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbosity >= 1 {
            self.write_stderr(&format!("{}\n", message.as_ref()));
        }
    }

    /// A warning on stderr (hidden by `-qq`); annotated on GitHub Actions.
    pub fn warn(&self, message: impl AsRef<str>) {
        if self.verbosity >= -1 {
            let message = message.as_ref();
            let prefix = self.style.paint("33", "warning");
            self.write_stderr(&format!("{prefix}: {message}\n"));
            if self.style.github_actions {
                self.write_stderr(&format!("::warning::{}\n", github::escape_data(message)));
            }
        }
    }

    /// One preflight/verification line: `✓ name  detail`.
    pub fn check(&self, state: CheckState, name: &str, detail: &str) {
        let (mark, color) = match state {
            CheckState::Ok => ("ok", "32"),
            CheckState::Warn => ("warn", "33"),
            CheckState::Fail => ("FAIL", "31"),
            CheckState::Skip => ("skip", "2"),
        };
        if state == CheckState::Fail || self.verbosity >= 0 {
            let mark = self.style.paint(color, &format!("{mark:>4}"));
            let line = if detail.is_empty() {
                format!("{mark} {name}\n")
            } else {
                format!("{mark} {name}: {detail}\n")
            };
            self.write_stderr(&line);
        }
    }

    /// Prints a failed command: the whole error chain, then `hint:` lines; never hidden by `-q`.
    pub fn error(&self, error: &CommandError) {
        let mut text = String::new();
        let mut chain = error.error().chain();
        if let Some(top) = chain.next() {
            text.push_str(&format!("{}: {top}\n", self.style.paint("31;1", "error")));
        }
        for cause in chain {
            text.push_str(&format!("  caused by: {cause}\n"));
        }
        for hint in error.hints() {
            text.push_str(&format!("{}: {hint}\n", self.style.paint("36", "hint")));
        }
        self.write_stderr(&text);
        if self.style.github_actions {
            let summary = format!("{:#}", error.error());
            let title = error.title().unwrap_or("");
            self.write_stderr(&github::error_annotation(title, &summary));
            let mut markdown = format!(
                "### psctl: {}\n\n{}\n",
                github::markdown_cell(error.title().unwrap_or("command failed")),
                github::markdown_cell(&summary)
            );
            for hint in error.hints() {
                markdown.push_str(&format!("\n- hint: {}", github::markdown_cell(hint)));
            }
            markdown.push('\n');
            self.step_summary(&markdown);
        }
    }

    /// Workflow commands rendered by [`github`] functions (`::error title=…::…` lines), written
    /// on GitHub Actions only; elsewhere [`Self::check`] lines already told the story.
    pub fn annotations(&self, text: &str) {
        if self.style.github_actions && !text.is_empty() {
            self.write_stderr(text);
        }
    }

    /// Appends `markdown` to the GitHub Actions job summary, when running there with
    /// `$GITHUB_STEP_SUMMARY` set; scrubbed like everything else. A summary that cannot be
    /// written is a warning, never a failure of the command.
    pub fn step_summary(&self, markdown: &str) {
        let Some(path) = self
            .step_summary
            .as_ref()
            .filter(|_| self.style.github_actions)
        else {
            return;
        };
        let scrubbed = self.redactor.scrub(markdown);
        if let Err(error) = github::append_step_summary(path, &scrubbed) {
            self.warn(format!(
                "cannot append to the job summary `{}`: {error}",
                path.display()
            ));
        }
    }

    /// A spinner for a long step; a no-op handle when progress bars are off (pipe, CI, `-q`).
    pub fn spinner(&self, message: impl Into<String>) -> Progress {
        let message = message.into();
        if self.style.progress {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(self.redactor.scrub(&message).into_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Progress {
                bar: Some(bar),
                output: self.clone(),
            }
        } else {
            self.info(&message);
            Progress {
                bar: None,
                output: self.clone(),
            }
        }
    }
}

/// A live progress indicator; messages fall back to plain lines when there is no terminal.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    output: Output,
}

impl Progress {
    pub fn set_message(&self, message: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.set_message(self.output.redactor.scrub(message.as_ref()).into_owned()),
            None => self.output.detail(message),
        }
    }

    /// Prints a line above the spinner (or as a plain line).
    pub fn println(&self, message: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(self.output.redactor.scrub(message.as_ref())),
            None => self.output.info(message),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn lock(writer: &SharedWriter) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
    // A panic mid-write leaves at worst a partial line; keep writing.
    writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cloneable in-memory writer for tests of anything that prints.
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    pub fn contents(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output {
    /// A copy whose data (stdout) goes into a buffer while messages, the redactor and the
    /// style stay shared with `self`: how `psctl run` collects each step's JSON.
    pub fn capturing_data(&self) -> (Self, Buffer) {
        let buffer = Buffer::default();
        let copy = Self {
            stdout: Arc::new(Mutex::new(Box::new(buffer.clone()))),
            // Captured data is read back as JSON; the caller prints it in YAML itself.
            format: if self.format == Format::Yaml {
                Format::Json
            } else {
                self.format
            },
            ..self.clone()
        };
        (copy, buffer)
    }
}

impl Output {
    /// An output writing into two buffers, for tests.
    pub fn buffered(format: Format, style: Style) -> (Self, Buffer, Buffer) {
        let (stdout, stderr) = (Buffer::default(), Buffer::default());
        (
            Self::new(
                format,
                style,
                0,
                Box::new(stdout.clone()),
                Box::new(stderr.clone()),
            ),
            stdout,
            stderr,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rows {
        names: Vec<String>,
    }

    impl Render for Rows {
        fn render_table(&self, _style: &Style) -> String {
            self.names.iter().map(|n| format!("{n}\n")).collect()
        }
    }

    #[test]
    fn data_goes_to_stdout_and_messages_to_stderr() {
        let (output, stdout, stderr) = Output::buffered(Format::Table, Style::PLAIN);
        output.info("deploying");
        output
            .data(&Rows {
                names: vec!["a".into(), "b".into()],
            })
            .unwrap();
        assert_eq!(stdout.contents(), "a\nb\n");
        assert_eq!(stderr.contents(), "deploying\n");
    }

    #[test]
    fn json_is_pretty_and_newline_terminated() {
        let (output, stdout, _) = Output::buffered(Format::Json, Style::PLAIN);
        output
            .data(&Rows {
                names: vec!["a".into()],
            })
            .unwrap();
        assert_eq!(stdout.contents(), "{\n  \"names\": [\n    \"a\"\n  ]\n}\n");
    }

    #[test]
    fn yaml_carries_the_same_data_as_json_and_is_scrubbed_too() {
        let rows = Rows {
            names: vec!["a".into(), "sk_live_0123456789".into(), "yes".into()],
        };
        let (json_output, json_stdout, _) = Output::buffered(Format::Json, Style::PLAIN);
        json_output.data(&rows).unwrap();
        let (yaml_output, yaml_stdout, _) = Output::buffered(Format::Yaml, Style::PLAIN);
        yaml_output.redactor().register("sk_live_0123456789");
        yaml_output.data(&rows).unwrap();
        let yaml = yaml_stdout.contents();
        assert!(!yaml.contains("sk_live_0123456789"), "{yaml}");
        let from_yaml: serde_json::Value = crate::yaml::from_str(&yaml).unwrap();
        let mut from_json: serde_json::Value =
            serde_json::from_str(&json_stdout.contents()).unwrap();
        from_json["names"][1] = serde_json::json!(redact::REDACTED);
        // `yes` stays the string "yes", not a YAML 1.1 boolean.
        assert_eq!(from_yaml, from_json);
    }

    #[test]
    fn captured_data_is_json_under_yaml_so_a_playbook_can_read_it_back() {
        let (output, _, _) = Output::buffered(Format::Yaml, Style::PLAIN);
        let (captured, buffer) = output.capturing_data();
        captured
            .data(&Rows {
                names: vec!["a".into()],
            })
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&buffer.contents()).unwrap();
        assert_eq!(parsed["names"][0], "a");
    }

    #[test]
    fn secrets_are_scrubbed_from_data_messages_and_errors() {
        let (output, stdout, stderr) = Output::buffered(Format::Json, Style::PLAIN);
        output.redactor().register("sk_live_0123456789");
        output
            .data(&Rows {
                names: vec!["key=sk_live_0123456789".into()],
            })
            .unwrap();
        output.info("using sk_live_0123456789");
        output.error(&CommandError::usage(anyhow::anyhow!(
            "bad key sk_live_0123456789"
        )));
        let all = stdout.contents() + &stderr.contents();
        assert!(!all.contains("sk_live_0123456789"), "{all}");
        assert_eq!(all.matches("[REDACTED]").count(), 3, "{all}");
    }

    #[test]
    fn errors_print_the_chain_then_hints_and_annotate_on_github() {
        let style = Style {
            github_actions: true,
            ..Style::PLAIN
        };
        let (output, _, stderr) = Output::buffered(Format::Table, style);
        let error = CommandError::unreachable(
            anyhow::anyhow!("connection refused").context("listing Secrets"),
        )
        .hint("is the sandbox running? `psctl-sandbox up`");
        output.error(&error);
        assert_eq!(
            stderr.contents(),
            "error: listing Secrets\n  caused by: connection refused\n\
             hint: is the sandbox running? `psctl-sandbox up`\n\
             ::error::listing Secrets: connection refused\n"
        );
    }

    #[test]
    fn quiet_hides_info_but_not_failures() {
        let stderr = Buffer::default();
        let output = Output::new(
            Format::Table,
            Style::PLAIN,
            -1,
            Box::new(Buffer::default()),
            Box::new(stderr.clone()),
        );
        output.info("hidden");
        output.check(CheckState::Ok, "namespace", "default");
        output.check(CheckState::Fail, "secret", "missing key BINANCE_API_KEY");
        assert_eq!(
            stderr.contents(),
            "FAIL secret: missing key BINANCE_API_KEY\n"
        );
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        use std::ffi::OsStr;
        let unset: Option<&OsStr> = None;
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        // terminal × NO_COLOR
        assert!(use_color(true, unset, unset));
        assert!(!use_color(true, set, unset));
        assert!(!use_color(false, unset, unset));
        assert!(!use_color(false, set, unset));
        // An empty NO_COLOR does not count as set.
        assert!(use_color(true, empty, unset));
        // CLICOLOR_FORCE colours a pipe, but NO_COLOR still wins; `0` does not force.
        assert!(use_color(false, unset, set));
        assert!(!use_color(false, set, set));
        assert!(!use_color(false, unset, Some(OsStr::new("0"))));
    }

    #[test]
    fn data_and_messages_are_coloured_by_their_own_stream() {
        let style = Style {
            color_stdout: false,
            color_stderr: true,
            ..Style::PLAIN
        };
        assert_eq!(style.paint_data("31", "FAIL"), "FAIL");
        assert_eq!(style.paint("31", "error"), "\u{1b}[31merror\u{1b}[0m");
    }

    #[test]
    fn a_titled_error_annotates_with_its_title_and_writes_the_job_summary() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        let style = Style {
            github_actions: true,
            ..Style::PLAIN
        };
        let (output, _, stderr) = Output::buffered(Format::Table, style);
        let output = output.with_step_summary(summary.clone());
        output.redactor().register("hunter2-secret");
        let error = CommandError::verification(anyhow::anyhow!(
            "the canary of `webhook` was aborted: error rate 5% > 1% (token hunter2-secret)"
        ))
        .titled("canary aborted: webhook")
        .hint("stable is restored");
        output.error(&error);
        let text = stderr.contents();
        assert!(
            text.ends_with(
                "::error title=canary aborted%3A webhook::the canary of `webhook` was aborted: \
                 error rate 5%25 > 1%25 (token [REDACTED])\n"
            ),
            "{text}"
        );
        let markdown = std::fs::read_to_string(&summary).unwrap();
        assert_eq!(
            markdown,
            "### psctl: canary aborted: webhook\n\nthe canary of \\`webhook\\` was aborted: \
             error rate 5% &gt; 1% (token [REDACTED])\n\n- hint: stable is restored\n"
        );
    }

    #[test]
    fn without_github_actions_nothing_is_annotated_or_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        let (output, _, stderr) = Output::buffered(Format::Table, Style::PLAIN);
        let output = output.with_step_summary(summary.clone());
        output.annotations(&github::error_annotation("smoke", "failed"));
        output.step_summary("## psctl smoke\n");
        output.error(&CommandError::verification(anyhow::anyhow!("no")).titled("x"));
        assert_eq!(stderr.contents(), "error: no\n");
        assert!(!summary.exists());
    }
}
