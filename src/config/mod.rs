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
/// every string value. The YAML is parsed first and only then are values substituted, so a value
/// arrives byte for byte whatever it holds (` #`, `: `, quotes, a newline); substituted text
/// would be parsed as YAML and could be cut or change the document.
pub fn load_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    load_yaml_with(path, &|k| std::env::var(k).ok())
}

fn load_yaml_with<T: for<'de> Deserialize<'de>>(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |e: serde_saphyr::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let tree: serde_json::Value = serde_saphyr::from_str(&text).map_err(parse_error)?;
    let tree = match tree {
        // An empty file: every setting at its default.
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        t => interpolate_tree(t, "", &text, path, env)?,
    };
    // JSON is YAML: every string quoted, so it reads back as the very string; the YAML reader
    // still turns a quoted "8" into a number where the setting is one.
    let json = serde_json::to_string(&tree).expect("a JSON value serializes");
    serde_saphyr::from_str(&json).map_err(parse_error)
}

/// Interpolates every string value in the tree; errors name the setting by its key (and the
/// line that holds the variable), never by its value, which may be a secret.
fn interpolate_tree(
    v: serde_json::Value,
    key: &str,
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<serde_json::Value, ConfigError> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) if s.contains('$') => {
            let line = s
                .find("${")
                .and_then(|i| s[i..].find('}').map(|e| &s[i..=i + e]))
                .and_then(|var| text.lines().position(|l| l.contains(var)));
            let what = match line {
                Some(n) => format!("{} {key} (line {})", path.display(), n + 1),
                None => format!("{} {key}", path.display()),
            };
            Value::String(interpolate_with(&s, &what, env)?)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| interpolate_tree(v, &format!("{key}[{i}]"), text, path, env))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let sub = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    Ok((k, interpolate_tree(v, &sub, text, path, env)?))
                })
                .collect::<Result<_, ConfigError>>()?,
        ),
        other => other,
    })
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

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        out: Option<String>,
        password: Option<Secret>,
        count: Option<usize>,
        list: Option<Vec<String>>,
    }

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        load_yaml_with(&path, &env)
    }

    #[test]
    fn substituted_values_arrive_byte_for_byte() {
        let tricky = "my #1.kar: \"quoted\" 'single' *star &amp\nsecond line";
        let c = load(
            "out: ${KAR_CFG_T1_OUT}\npassword: \"${KAR_CFG_T1_PW}\"\ncount: ${KAR_CFG_T1_N} # a comment ${UNSET_FOR_SURE_123}\nlist: [\"${KAR_CFG_T1_OUT}\", b]\n",
            &[
                ("KAR_CFG_T1_OUT", tricky),
                ("KAR_CFG_T1_PW", "p: w #0 \"x\""),
                ("KAR_CFG_T1_N", "8"),
            ],
        )
        .unwrap();
        assert_eq!(c.out.as_deref(), Some(tricky));
        assert_eq!(c.password.unwrap().expose(), "p: w #0 \"x\"");
        assert_eq!(c.count, Some(8));
        assert_eq!(c.list.unwrap(), vec![tricky.to_string(), "b".into()]);
    }

    #[test]
    fn an_unset_variable_names_the_setting_and_line_not_the_value() {
        let e = load("out: x.kar\npassword: pre-${KAR_CFG_T2_UNSET}-post\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("password (line 2)") && e.contains("KAR_CFG_T2_UNSET is not set"),
            "{e}"
        );
        let e = load("outt: x\n", &[]).unwrap_err().to_string();
        assert!(e.contains("outt"), "{e}");
        assert!(load("", &[]).is_ok());
    }
}
