//! GitHub Actions integration as text: workflow-command annotations (`::error title=…::…`) and
//! markdown for the job summary (`$GITHUB_STEP_SUMMARY`). Everything here is a pure function
//! from values to text except [`append_step_summary`]; [`super::Output`] decides when to use it.

use std::io::Write as _;
use std::path::Path;

/// One `::error` workflow command, newline-terminated. An empty `title` is left out.
pub fn error_annotation(title: &str, message: &str) -> String {
    if title.is_empty() {
        format!("::error::{}\n", escape_data(message))
    } else {
        format!(
            "::error title={}::{}\n",
            escape_property(title),
            escape_data(message)
        )
    }
}

/// Escapes a workflow command's message: `%`, CR and LF, so a multi-line message stays one
/// annotation.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (`title=`): as [`escape_data`], plus `:` and `,`
/// which would otherwise end the value.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Escapes text for a markdown table cell: `|` would split the cell, a newline the row, and
/// backticks, `<`, `>` and `&` would turn evidence into markup.
pub fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '`' => out.push_str("\\`"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {}
            '\n' => out.push_str("<br>"),
            c => out.push(c),
        }
    }
    out
}

/// Appends `markdown` to the job summary file (created if missing, as the runner does).
pub fn append_step_summary(path: &Path, markdown: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(markdown.as_bytes())?;
    if !markdown.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_escape_the_message_and_the_title_as_documented() {
        assert_eq!(
            error_annotation("smoke: metrics/webhook, 2", "50% down\r\nsee: logs"),
            "::error title=smoke%3A metrics/webhook%2C 2::50%25 down%0D%0Asee: logs\n"
        );
        assert_eq!(error_annotation("", "a\nb"), "::error::a%0Ab\n");
    }

    #[test]
    fn percent_is_escaped_first_so_escapes_are_not_doubled() {
        assert_eq!(escape_property("%3A:"), "%253A%3A");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(
            markdown_cell("a|b\n`c` <d> & e"),
            "a\\|b<br>\\`c\\` &lt;d&gt; &amp; e"
        );
    }

    #[test]
    fn the_summary_is_appended_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.md");
        std::fs::write(&path, "earlier step\n").unwrap();
        append_step_summary(&path, "## psctl smoke").unwrap();
        append_step_summary(&path, "second\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier step\n## psctl smoke\nsecond\n"
        );
    }
}
