//! `tessera scan`: finds token values where they should not be — in files, and with
//! `--git` in every commit of a repository's history — and with `--report` sends them
//! to `POST /api/v1/tokens/leaked`, which disables their tokens.
//!
//! A value is reported only if its checksum holds (`tessera_core::token::find_values`),
//! so look-alikes in tests and docs are not findings. What is printed is where, and the
//! value's `display` form: the scanner never prints a value, so its output is safe to
//! keep in a CI log.

use super::commands::Ctx;
use super::{CliError, CliResult};
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tessera_core::token::{find_values, TokenHash, TokenValue};

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files and directories to scan (default: the current directory). Directories are
    /// walked as ripgrep does: `.gitignore`d files and the `.git` directory are skipped,
    /// other hidden files are not.
    pub paths: Vec<PathBuf>,
    /// Also scan every commit of the git repository at each path (all branches and
    /// tags), not only the files as they are.
    #[arg(long)]
    pub git: bool,
    /// Send the values found to the server's leak endpoint (`TESSERA_URL`, no token
    /// needed): their tokens are disabled at once.
    #[arg(long)]
    pub report: bool,
}

/// One place a value was found.
struct Finding {
    /// The commit that added it, for a finding in history.
    commit: Option<String>,
    path: String,
    line: usize,
    value: TokenValue,
}

impl Finding {
    fn json(&self) -> Value {
        json!({
            "commit": self.commit, "path": self.path, "line": self.line,
            "display": self.value.display(),
        })
    }
}

/// Values one leak report carries at most (the server's limit).
const REPORT_BATCH: usize = 100;

pub async fn scan(ctx: &Ctx, args: ScanArgs) -> CliResult {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths
    };
    let mut findings = Vec::new();
    for path in &paths {
        scan_files(path, &mut findings)?;
        if args.git {
            scan_history(path, &mut findings)?;
        }
    }
    if ctx.json {
        outln!(
            "{}",
            Value::Array(findings.iter().map(Finding::json).collect())
        );
    } else {
        for f in &findings {
            let commit = f
                .commit
                .as_deref()
                .map(|c| format!("{}:", &c[..c.len().min(12)]));
            outln!(
                "{}{}:{}: {}",
                commit.unwrap_or_default(),
                f.path,
                f.line,
                f.value.display()
            );
        }
    }
    if findings.is_empty() {
        eprintln!("tessera scan: no token values found");
        return Ok(());
    }
    let mut seen = HashSet::<TokenHash>::new();
    let distinct: Vec<&TokenValue> = findings
        .iter()
        .map(|f| &f.value)
        .filter(|v| seen.insert(v.hash()))
        .collect();
    if args.report {
        let (mut received, mut revoked) = (0, 0);
        for batch in distinct.chunks(REPORT_BATCH) {
            let values: Vec<&str> = batch.iter().map(|v| v.expose_secret()).collect();
            let answer = ctx
                .client
                .post("/tokens/leaked", &json!({ "tokens": values }))
                .await?;
            received += answer["received"].as_u64().unwrap_or(0);
            revoked += answer["revoked"].as_u64().unwrap_or(0);
        }
        eprintln!(
            "tessera scan: reported {received} value(s) to {}; {revoked} live token(s) disabled",
            ctx.client.base_url()
        );
    }
    Err(CliError::Refused(format!(
        "{} token value(s) found in {} place(s){}",
        distinct.len(),
        findings.len(),
        if args.report {
            ""
        } else {
            "; revoke them (or run with --report)"
        }
    )))
}

/// Scans the file at `path`, or every file under it.
fn scan_files(path: &Path, findings: &mut Vec<Finding>) -> CliResult {
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let walk = ignore::WalkBuilder::new(path)
        .hidden(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    let mut contents = Vec::new();
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                eprintln!("tessera scan: skipped: {e}");
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        contents.clear();
        let read = std::fs::File::open(entry.path()).and_then(|mut f| f.read_to_end(&mut contents));
        if let Err(e) = read {
            eprintln!("tessera scan: skipped {}: {e}", entry.path().display());
            continue;
        }
        let mut lines = LineCounter::default();
        for (at, value) in find_values(&contents) {
            findings.push(Finding {
                commit: None,
                path: entry.path().display().to_string(),
                line: lines.line_of(&contents, at),
                value,
            });
        }
    }
    Ok(())
}

/// Line numbers of increasing offsets in one text, counting each newline once.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_of(&mut self, text: &[u8], at: usize) -> usize {
        self.line += memchr::memchr_iter(b'\n', &text[self.offset..at]).count();
        self.offset = at;
        self.line + 1
    }
}

/// Scans every line that any commit of the repository at `path` added, on every
/// branch and tag (`git log --all -p`), naming the commit, file and line.
fn scan_history(path: &Path, findings: &mut Vec<Finding>) -> CliResult {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.quotepath=off",
            "log",
            "--all",
            "-p",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--format=%x00commit %H",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::Usage(format!("--git needs git on the PATH: {e}")))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(CliError::Usage("cannot read git's output".into()));
    };
    let mut diff = DiffReader::default();
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => diff.feed(&line, findings),
            Err(e) => return Err(CliError::Usage(format!("cannot read git's output: {e}"))),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CliError::Usage(format!("git failed: {e}")))?;
    if !output.status.success() {
        return Err(CliError::Usage(format!(
            "{} is not a git repository with history to scan: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Follows `git log -p -U0` output a line at a time: which commit, which file, and the
/// new-side line number of each added line.
#[derive(Default)]
struct DiffReader {
    commit: String,
    path: Option<String>,
    /// The next added line's number, and how many old and new lines the hunk has left.
    next_line: usize,
    old_left: usize,
    new_left: usize,
}

impl DiffReader {
    fn feed(&mut self, line: &[u8], findings: &mut Vec<Finding>) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if self.old_left > 0 || self.new_left > 0 {
            match text.first() {
                Some(b'+') => {
                    self.new_left = self.new_left.saturating_sub(1);
                    if let Some(path) = &self.path {
                        for (_, value) in find_values(&text[1..]) {
                            findings.push(Finding {
                                commit: Some(self.commit.clone()),
                                path: path.clone(),
                                line: self.next_line,
                                value,
                            });
                        }
                    }
                    self.next_line += 1;
                }
                Some(b'-') => self.old_left = self.old_left.saturating_sub(1),
                // "\ No newline at end of file" belongs to the line before it.
                _ => {}
            }
            return;
        }
        if let Some(commit) = text.strip_prefix(b"\0commit ") {
            self.commit = String::from_utf8_lossy(commit).into_owned();
            self.path = None;
        } else if let Some(path) = text.strip_prefix(b"+++ ") {
            let path = String::from_utf8_lossy(path);
            let path = path.trim_matches('"');
            self.path = (path != "/dev/null").then(|| path.trim_start_matches("b/").to_owned());
        } else if let Some(hunk) = text.strip_prefix(b"@@ -") {
            if let Some((old, new)) = hunk_ranges(&String::from_utf8_lossy(hunk)) {
                (self.old_left, self.next_line, self.new_left) = (old, new.0, new.1);
            }
        }
    }
}

/// From `a[,b] +c[,d] @@…`: the old line count `b` and the new start and count `(c, d)`
/// (a count left out is 1).
fn hunk_ranges(hunk: &str) -> Option<(usize, (usize, usize))> {
    let (old, rest) = hunk.split_once(" +")?;
    let new = rest.split_once(" @@")?.0;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    Some((range(old)?.1, range(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunk_headers_give_counts_and_the_new_start() {
        assert_eq!(hunk_ranges("0,0 +1,3 @@"), Some((0, (1, 3))));
        assert_eq!(hunk_ranges("4 +5 @@ fn main() {"), Some((1, (5, 1))));
        assert_eq!(hunk_ranges("7,2 +6,0 @@"), Some((2, (6, 0))));
        assert_eq!(hunk_ranges("garbage"), None);
    }

    #[test]
    fn added_lines_are_numbered_on_the_new_side() {
        let value = TokenValue::from_random_bytes(&[3u8; 32]);
        let log = format!(
            "\0commit abc\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n-old {v}\n-old\n+one\n+two\n+key={v}\n",
            v = value.expose_secret()
        );
        let mut diff = DiffReader::default();
        let mut found = Vec::new();
        for line in log.split_inclusive('\n') {
            diff.feed(line.as_bytes(), &mut found);
        }
        assert_eq!(found.len(), 1, "a removed line is not a finding");
        assert_eq!(
            (
                found[0].commit.as_deref(),
                found[0].path.as_str(),
                found[0].line
            ),
            (Some("abc"), "x", 3)
        );
    }

    #[test]
    fn lines_count_from_one_across_increasing_offsets() {
        let text = b"a\nb\nc tsr_\n\nd tsr_";
        let mut lines = LineCounter::default();
        assert_eq!(lines.line_of(text, 0), 1);
        assert_eq!(lines.line_of(text, 6), 3);
        assert_eq!(lines.line_of(text, 14), 5);
    }
}
