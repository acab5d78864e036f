//! `docs/cli.md` carries the `--help` text of every command, generated from the clap types.
//! This test regenerates it and fails when the committed file differs, so the reference (and
//! the help text it snapshots) cannot drift. Refresh with
//! `UPDATE_CLI_REFERENCE=1 cargo nextest run -p psctl --test cli_reference`.

use clap::CommandFactory as _;

const BEGIN: &str = "<!-- BEGIN GENERATED: psctl --help (tests/cli_reference.rs) -->";
const END: &str = "<!-- END GENERATED -->";

fn render(command: &mut clap::Command, path: &str, out: &mut String) {
    let help = command.render_long_help().to_string();
    out.push_str(&format!(
        "### `{path}`\n\n```text\n{}\n```\n\n",
        help.trim_end()
    ));
    let names: Vec<String> = command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help" && !sub.is_hide_set())
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        if let Some(sub) = command.find_subcommand_mut(&name) {
            render(sub, &format!("{path} {name}"), out);
        }
    }
}

fn generated() -> String {
    let mut command = psctl::cli::Cli::command().term_width(100);
    command.build();
    let mut out = String::new();
    render(&mut command, "psctl", &mut out);
    out
}

#[test]
fn docs_cli_md_matches_the_help_text() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let current = std::fs::read_to_string(&path).expect("docs/cli.md exists");
    let (Some(begin), Some(end)) = (current.find(BEGIN), current.find(END)) else {
        panic!("docs/cli.md lacks the generated-section markers `{BEGIN}` … `{END}`");
    };
    let expected = format!(
        "{}{BEGIN}\n\n{}{}",
        &current[..begin],
        generated(),
        &current[end..]
    );
    if std::env::var_os("UPDATE_CLI_REFERENCE").is_some() {
        std::fs::write(&path, &expected).expect("write docs/cli.md");
        return;
    }
    assert!(
        current == expected,
        "docs/cli.md is out of date with the clap definitions; regenerate it with \
         `UPDATE_CLI_REFERENCE=1 cargo nextest run -p psctl --test cli_reference` and review the diff"
    );
}
