//! Static bearer tokens (`--token-auth-file`), in upstream's CSV format:
//! `token,user,uid[,"group1,group2,…"]`, one record per line.

use std::path::Path;

use crate::error::{Error, Result};
use crate::identity::{add_authenticated_group, UserInfo};

/// A loaded static token file.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    /// Unique tokens with their users; a later record for a token replaced an earlier one.
    entries: Vec<(String, UserInfo)>,
}

impl TokenFile {
    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> Result<TokenFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        TokenFile::parse(&text, &path.display().to_string())
    }

    /// Parses token file text; `name` stands for the file in messages.
    ///
    /// As upstream (Go's `encoding/csv`, any number of fields): fields may be
    /// quoted with `"` (`""` inside quotes is a quote, quoted fields may span
    /// lines), empty lines are skipped, `#` starts no comment, a record needs
    /// at least three fields, records with an empty token are skipped, and a
    /// repeated token takes the later record. The fourth field, if present, is
    /// split on `,` into groups.
    pub fn parse(text: &str, name: &str) -> Result<TokenFile> {
        let records =
            parse_csv(text).map_err(|e| Error::TokenFile(format!("token file '{name}': {e}")))?;
        let mut file = TokenFile::default();
        for (number, (line, record)) in records.into_iter().enumerate() {
            let number = number + 1;
            if record.len() < 3 {
                return Err(Error::TokenFile(format!(
                    "token file '{name}' must have at least 3 columns (token, user name, user uid), found {} on line {line}",
                    record.len()
                )));
            }
            let mut fields = record.into_iter();
            let token = fields.next().unwrap_or_default();
            if token.is_empty() {
                tracing::warn!(
                    file = name,
                    record = number,
                    "empty token has been found in token file"
                );
                continue;
            }
            let mut user = UserInfo {
                name: fields.next().unwrap_or_default(),
                uid: fields.next().unwrap_or_default(),
                groups: fields
                    .next()
                    .map(|g| g.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            };
            add_authenticated_group(&mut user);
            if let Some(existing) = file.entries.iter_mut().find(|(t, _)| *t == token) {
                tracing::warn!(
                    file = name,
                    record = number,
                    "duplicate token has been found in token file"
                );
                existing.1 = user;
            } else {
                file.entries.push((token, user));
            }
        }
        Ok(file)
    }

    /// Adds or replaces a token, e.g. one the server generated itself.
    pub fn insert(&mut self, token: impl Into<String>, mut user: UserInfo) {
        let token = token.into();
        add_authenticated_group(&mut user);
        match self.entries.iter_mut().find(|(t, _)| *t == token) {
            Some(existing) => existing.1 = user,
            None => self.entries.push((token, user)),
        }
    }

    /// The user holding `token`, if any. Every entry is compared in constant
    /// time, so timing reveals neither which token matched nor how much of one.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mut found = None;
        for (candidate, user) in &self.entries {
            if constant_time_eq(candidate.as_bytes(), token.as_bytes()) {
                found = Some(user);
            }
        }
        found.cloned()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A CSV syntax error, worded as Go's `csv.ParseError`.
#[derive(Debug, PartialEq, Eq)]
struct CsvError {
    start_line: usize,
    line: usize,
    column: usize,
    message: &'static str,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start_line != self.line {
            write!(f, "record on line {}; ", self.start_line)?;
        }
        write!(
            f,
            "parse error on line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

const ERR_BARE_QUOTE: &str = "bare \" in non-quoted-field";
const ERR_QUOTE: &str = "extraneous or missing \" in quoted-field";

/// Splits `text` into records with the line each starts on, following Go's
/// `encoding/csv` with its defaults (comma separator, strict quotes).
fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut records = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index] == "\n" {
            index += 1;
            continue;
        }
        let start_line = index + 1;
        let mut line = lines[index];
        let mut pos = 0;
        let mut fields = Vec::new();
        'fields: loop {
            if line[pos..].starts_with('"') {
                let mut field = String::new();
                pos += 1;
                loop {
                    match line[pos..].find('"') {
                        Some(q) => {
                            field.push_str(&line[pos..pos + q]);
                            pos += q + 1;
                            let rest = &line[pos..];
                            if rest.starts_with('"') {
                                field.push('"');
                                pos += 1;
                            } else if rest.starts_with(',') {
                                fields.push(field);
                                pos += 1;
                                continue 'fields;
                            } else if rest.is_empty() || rest == "\n" {
                                fields.push(field);
                                break 'fields;
                            } else {
                                return Err(CsvError {
                                    start_line,
                                    line: index + 1,
                                    // One past the stray quote: its 1-based column.
                                    column: pos,
                                    message: ERR_QUOTE,
                                });
                            }
                        }
                        None => {
                            field.push_str(&line[pos..]);
                            if index + 1 >= lines.len() {
                                return Err(CsvError {
                                    start_line,
                                    line: index + 1,
                                    column: line.trim_end_matches('\n').len() + 1,
                                    message: ERR_QUOTE,
                                });
                            }
                            index += 1;
                            line = lines[index];
                            pos = 0;
                        }
                    }
                }
            } else {
                let rest = line[pos..].strip_suffix('\n').unwrap_or(&line[pos..]);
                let end = rest.find(',').unwrap_or(rest.len());
                if let Some(q) = rest[..end].find('"') {
                    return Err(CsvError {
                        start_line,
                        line: index + 1,
                        column: pos + q + 1,
                        message: ERR_BARE_QUOTE,
                    });
                }
                fields.push(rest[..end].to_string());
                if end < rest.len() {
                    pos += end + 1;
                } else {
                    break 'fields;
                }
            }
        }
        records.push((start_line, fields));
        index += 1;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_records_quotes_and_groups() {
        let text = "\
t1,alice,1
t2,bob,2,\"dev,ops\"\r

\"t,3\",\"car\"\"ol\",3,single
\"t4\",dave,4,\"multi
line\"
t5,eve,5,,extra
";
        let f = TokenFile::parse(text, "tokens.csv").unwrap();
        assert_eq!(f.len(), 5);
        let alice = f.authenticate("t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1");
        assert_eq!(alice.groups, groups(&["system:authenticated"]));
        assert_eq!(
            f.authenticate("t2").unwrap().groups,
            groups(&["dev", "ops", "system:authenticated"])
        );
        let carol = f.authenticate("t,3").unwrap();
        assert_eq!(carol.name, "car\"ol");
        assert_eq!(carol.groups, groups(&["single", "system:authenticated"]));
        assert_eq!(
            f.authenticate("t4").unwrap().groups,
            groups(&["multi\nline", "system:authenticated"])
        );
        // An empty fourth column is one empty group, as strings.Split gives upstream.
        assert_eq!(
            f.authenticate("t5").unwrap().groups,
            groups(&["", "system:authenticated"])
        );
        assert_eq!(f.authenticate("t"), None);
        assert_eq!(f.authenticate("t11"), None);
        assert_eq!(f.authenticate(""), None);
    }

    #[test]
    fn empty_tokens_are_skipped_and_duplicates_take_the_last_record() {
        let f = TokenFile::parse(
            ",nobody,0\nx,first,1\nx,second,2,\"system:authenticated\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        let u = f.authenticate("x").unwrap();
        assert_eq!(u.name, "second");
        assert_eq!(u.groups, groups(&["system:authenticated"]));
        assert_eq!(f.authenticate(""), None);
    }

    #[test]
    fn hash_lines_are_records_not_comments() {
        let err = TokenFile::parse("t1,alice,1\n# a comment\n", "/etc/tokens.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "token file '/etc/tokens.csv' must have at least 3 columns (token, user name, user uid), found 1 on line 2"
        );
        let f = TokenFile::parse("#t,u,1\n", "f").unwrap();
        assert_eq!(f.authenticate("#t").unwrap().name, "u");
    }

    #[test]
    fn too_few_columns_names_the_line() {
        let err = TokenFile::parse("\nt1,alice,1\n\nt2,bob\n", "f").unwrap_err();
        assert!(matches!(err, Error::TokenFile(_)));
        assert_eq!(
            err.to_string(),
            "token file 'f' must have at least 3 columns (token, user name, user uid), found 2 on line 4"
        );
    }

    #[test]
    fn quote_errors_name_line_and_column() {
        assert_eq!(
            TokenFile::parse("t1,alice,1\nt2,bo\"b,2\n", "f")
                .unwrap_err()
                .to_string(),
            "token file 'f': parse error on line 2, column 6: bare \" in non-quoted-field"
        );
        assert_eq!(
            TokenFile::parse("\"t1\"x,alice,1\n", "f").unwrap_err().to_string(),
            "token file 'f': parse error on line 1, column 4: extraneous or missing \" in quoted-field"
        );
        assert_eq!(
            TokenFile::parse("t1,alice,1\n\"t2,bob,2\nt3,carol,3", "f").unwrap_err().to_string(),
            "token file 'f': record on line 2; parse error on line 3, column 11: extraneous or missing \" in quoted-field"
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "abc,admin,admin,system:masters\n").unwrap();
        let f = TokenFile::load(&path).unwrap();
        assert_eq!(
            f.authenticate("abc").unwrap().groups,
            groups(&["system:masters", "system:authenticated"])
        );
        let err = TokenFile::load(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().starts_with("read "), "{err}");
    }

    #[test]
    fn insert_adds_and_replaces() {
        let mut f = TokenFile::default();
        assert!(f.is_empty());
        f.insert(
            "k",
            UserInfo {
                name: "a".into(),
                ..Default::default()
            },
        );
        f.insert(
            "k",
            UserInfo {
                name: "b".into(),
                ..Default::default()
            },
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f.authenticate("k").unwrap().name, "b");
        assert_eq!(
            f.authenticate("k").unwrap().groups,
            groups(&["system:authenticated"])
        );
    }
}
