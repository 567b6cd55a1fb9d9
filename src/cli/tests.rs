use super::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot open {file}: {source}")]
struct Quoting {
    file: &'static str,
    source: std::io::Error,
}

#[test]
fn a_cause_the_message_already_quotes_is_said_once() {
    let source = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
    let error = anyhow::Error::from(Quoting { file: "nope.jsonl", source });
    assert_eq!(error_message(&error), "cannot open nope.jsonl: No such file or directory (os error 2)");
}

#[test]
fn a_cause_the_message_does_not_quote_is_appended() {
    let source = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied (os error 13)");
    let error = anyhow::Error::from(source).context("cannot write report.html");
    assert_eq!(error_message(&error), "cannot write report.html: Permission denied (os error 13)");
}

#[test]
fn logs_are_coloured_only_at_a_terminal_without_no_color() {
    use std::ffi::OsStr;
    assert!(log_colours(true, None));
    assert!(log_colours(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
    assert!(!log_colours(true, Some(OsStr::new("1"))));
    assert!(!log_colours(false, None));
    assert!(!log_colours(false, Some(OsStr::new("1"))));
}
