//! Settings shared by commands: secrets that never print, `${ENV_VAR}` interpolation, and the YAML
//! config file that every command-line option can also come from (flags override the file).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}", path = .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{what}: environment variable {var} is not set")]
    MissingEnv { what: String, var: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// A password or token: never shown by `Debug` or `Display`, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for handing to a client library. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every `${NAME}` in `value` with the environment variable NAME; `$${` stays a literal
/// `${`. `what` names the setting in errors (never the value: it may be a secret).
pub fn interpolate(value: &str, what: &str) -> Result<String, ConfigError> {
    interpolate_with(value, what, |k| std::env::var(k).ok())
}

pub fn interpolate_with(
    value: &str,
    what: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t.find('}').ok_or_else(|| ConfigError::Invalid {
                what: what.to_string(),
                message: "unterminated ${ in value".into(),
            })?;
            let name = &t[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Invalid {
                    what: what.to_string(),
                    message: format!("bad variable name {name:?} in ${{…}}"),
                });
            }
            let v = env(name).ok_or_else(|| ConfigError::MissingEnv {
                what: what.to_string(),
                var: name.to_string(),
            })?;
            out.push_str(&v);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a YAML config file into `T` (whose fields deny unknown keys), interpolating `${VAR}` in
/// every string value first.
pub fn load_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = interpolate_yaml_text(&text, path)?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Interpolation on the text line by line, so an error can name the line (and not the value).
fn interpolate_yaml_text(text: &str, path: &Path) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        let what = format!("{} line {}", path.display(), n + 1);
        // Comments are left alone: an example may mention ${VAR} that is not set.
        let (code, comment) = split_comment(line);
        out.push_str(&interpolate(code, &what)?);
        out.push_str(comment);
        out.push('\n');
    }
    Ok(out)
}

fn split_comment(line: &str) -> (&str, &str) {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(char::is_whitespace)) => {
                return (&line[..i], &line[i..]);
            }
            _ => {}
        }
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "USER" => Some("alice".into()),
            "PW" => Some("s3cr$t".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolates_and_escapes() {
        assert_eq!(
            interpolate_with("u=${USER} p=${PW}", "x", env).unwrap(),
            "u=alice p=s3cr$t"
        );
        assert_eq!(
            interpolate_with("$${USER} costs $5", "x", env).unwrap(),
            "${USER} costs $5"
        );
        let e = interpolate_with("${NOPE}", "kafka.sasl_password", env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "kafka.sasl_password: environment variable NOPE is not set"
        );
        assert!(interpolate_with("${USER", "x", env).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn comments_are_not_interpolated() {
        let out = interpolate_yaml_text("a: 1 # set ${UNSET_FOR_SURE_123}\n", Path::new("c.yaml"))
            .unwrap();
        assert_eq!(out, "a: 1 # set ${UNSET_FOR_SURE_123}\n");
    }
}
