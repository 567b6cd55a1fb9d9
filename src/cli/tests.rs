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
