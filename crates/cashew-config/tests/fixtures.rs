//! Every file in `fixtures/bad/` is a broken config whose first line says which error
//! it must produce: `# expect: LINE:COL: text`. The error must point at that line and
//! column and its message must contain the text.

use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_broken_fixture_reports_its_error_where_it_is() {
    let files = fixtures();
    assert!(files.len() >= 15, "only {} fixtures", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()));
        let (line, rest) = expect.split_once(':').unwrap();
        let (column, message) = rest.split_once(": ").unwrap();
        let location = format!(":{line}:{column}: ");

        let errors =
            cashew_config::load(&path).expect_err(&format!("{} was accepted", path.display()));
        let rendered: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
        let file = path.display().to_string();
        assert!(
            rendered
                .iter()
                .any(|e| e.starts_with(&format!("{file}{location}")) && e.contains(message)),
            "{file}: expected an error at {line}:{column} containing {message:?}, got:\n{}",
            rendered.join("\n")
        );
    }
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let text = "a:\n  listen: 127.0.0.1:1\n  hash: nope\n  redis: maybe\n  servers:\n    - h:1:0\n";
    let errors = cashew_config::parse("multi.yml", text).unwrap_err();
    let lines: Vec<usize> = errors.0.iter().map(|e| e.at.unwrap().line).collect();
    assert_eq!(lines, vec![3, 4, 6], "{errors}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let errors = cashew_config::load(Path::new("/nonexistent/cashew.yml")).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.starts_with("/nonexistent/cashew.yml: cannot read the config file"),
        "{text}"
    );
}
