//! Table rendering shared by every command: one consistent style built on `tabled`. Cells may
//! carry ANSI colour ([`super::Style::paint_data`]); tabled's `ansi` feature measures them by
//! their visible width so columns stay aligned.

use tabled::builder::Builder;
use tabled::settings::Style as TableStyle;

/// Renders `rows` under `header` as a plain table ending with a newline; an empty body prints
/// only the header so scripts see the columns.
pub fn render<I, R, S>(header: &[&str], rows: I) -> String
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut builder = Builder::default();
    builder.push_record(header.iter().map(|h| (*h).to_owned()));
    for row in rows {
        builder.push_record(row.into_iter().map(Into::into));
    }
    let mut table = builder.build();
    table.with(TableStyle::blank());
    let mut text = table.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_columns() {
        let text = render(
            &["REVISION", "STATUS"],
            [["1", "superseded"], ["12", "deployed"]],
        );
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                " REVISION   STATUS",
                " 1          superseded",
                " 12         deployed"
            ]
        );
    }
}
