//! Reading configuration from environment variables, with errors a person can act on.
//!
//! Every step reads its configuration in two phases: a raw struct of optional strings read with
//! [`from_env`] under exactly the documented variable names, then a `TryFrom` that parses and
//! validates it with the helpers here. Each helper takes the variable's name so that every error
//! names the variable and what was expected, and none ever echoes a secret value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// A configuration that cannot be used: a missing, malformed or contradictory variable or file.
///
/// Its `Display` is one line that starts with the variable (or file) at fault. Steps exit with
/// code 2 on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The variable (or variables, or file) at fault, as the user would write it.
    pub variable: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// A new error about `variable`.
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

/// Reads a raw configuration struct from the process environment.
///
/// Field `vault_addr` is read from `VAULT_ADDR`. Raw structs should hold only `String`s and
/// `Option<String>`s, so that the only error here is a missing required variable; parsing is
/// left to the helpers below, which name the variable and never echo the value.
///
/// # Errors
/// A [`ConfigError`] naming the first required variable that is not set.
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    from_iter(std::env::vars())
}

/// Like [`from_env`], from the given `(name, value)` pairs (for tests).
///
/// # Errors
/// As [`from_env`].
pub fn from_iter<T, I>(vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    // Kubernetes fills an optional Secret key that is absent with nothing, but a key that is
    // present and empty with "": both mean "not set".
    let vars = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
    envy::from_iter(vars).map_err(|e| match e {
        envy::Error::MissingValue(field) => {
            ConfigError::new(field.to_uppercase(), "is required but not set")
        }
        envy::Error::Custom(message) => ConfigError::new("environment", message),
    })
}

/// A secret value (token, key, password): its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses a boolean variable: `true/false`, `1/0`, `yes/no`, `on/off` (any case); unset gives `default`.
///
/// # Errors
/// A [`ConfigError`] naming `variable` if the value is anything else.
pub fn parse_bool(variable: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            variable,
            format!("expected true or false, got {value:?}"),
        )),
    }
}

/// Parses a duration: a bare number of seconds (`90`) or a humantime span (`90s`, `5m`, `1h 30m`);
/// unset gives `default`.
///
/// # Errors
/// A [`ConfigError`] naming `variable` if the value is not a positive duration.
pub fn parse_duration(
    variable: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let value = value.trim();
    let parsed = match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(value),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            variable,
            format!("expected a positive duration such as 30s, 5m or 2h, got {value:?}"),
        )),
    }
}

/// Parses a whole number within `min..=max`; unset gives `None`.
///
/// # Errors
/// A [`ConfigError`] naming `variable` if the value is not a whole number in range.
pub fn parse_count(
    variable: &str,
    value: Option<&str>,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    match value.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::new(
            variable,
            format!("expected a whole number from {min} to {max}, got {value:?}"),
        )),
    }
}

/// Reads a secret from a file (a mounted Secret key or a service-account token), trimming the
/// trailing newline editors and `kubectl create secret --from-file` leave.
///
/// # Errors
/// A [`ConfigError`] naming `variable` and the path if the file cannot be read or is empty.
pub fn read_secret_file(variable: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(variable, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::new(
            variable,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(text))
}

/// A secret given either directly (`value_var`, e.g. `VAULT_TOKEN`) or in a mounted file
/// (`file_var`, e.g. `VAULT_TOKEN_FILE`): `None` if neither is set.
///
/// # Errors
/// A [`ConfigError`] naming both variables if both are set, or the file's variable if the file
/// cannot be read or is empty.
pub fn secret_or_file(
    value_var: &str,
    value: Option<&str>,
    file_var: &str,
    file: Option<&str>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{value_var}, {file_var}"),
            "both are set; set only one of them",
        )),
        (Some(v), None) => Ok(Some(Secret::new(v.trim()))),
        (None, Some(f)) => read_secret_file(file_var, Path::new(f)).map(Some),
        (None, None) => Ok(None),
    }
}

/// Checks that `path` is an existing directory, for variables that name a workspace or store.
///
/// # Errors
/// A [`ConfigError`] naming `variable` if the path does not exist or is not a directory.
pub fn existing_dir(variable: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(path);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(ConfigError::new(
            variable,
            format!("{path} is not a directory"),
        )),
        Err(e) => Err(ConfigError::new(
            variable,
            format!("directory {path} is not usable: {e}"),
        )),
    }
}

/// Checks a name prefix (`SNAPSHOT_PREFIX`): it becomes part of file and object names, so only
/// letters, digits, `-`, `_` and `.` are allowed, and it must start with a letter or digit.
///
/// # Errors
/// A [`ConfigError`] naming `variable` if the prefix is empty or has other characters.
pub fn name_prefix(
    variable: &str,
    value: Option<&str>,
    default: &str,
) -> Result<String, ConfigError> {
    let prefix = value.unwrap_or(default).trim();
    let ok = prefix
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && prefix.len() <= 100
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError::new(
            variable,
            format!(
                "expected letters, digits, '-', '_' or '.' starting with a letter or digit (at most 100), got {prefix:?}"
            ),
        ))
    }
}

/// A snapshot's name as given to a step (`SNAPSHOT_NAME`, `SNAPSHOT_NAME_FILE`): the file name
/// stem, with no path and no `.snap` suffix, in the characters [`name_prefix`] allows.
///
/// # Errors
/// A [`ConfigError`] naming `variable`, with an example of a good name.
pub fn snapshot_name(variable: &str, name: &str) -> Result<String, ConfigError> {
    let name = name.trim();
    if name.ends_with(crate::artifact::SNAP_SUFFIX) || name.contains(".snap.") {
        return Err(ConfigError::new(
            variable,
            format!("expected the snapshot name without its .snap suffix, got {name:?}"),
        ));
    }
    name_prefix(variable, Some(name), "").map_err(|_| {
        ConfigError::new(
            variable,
            format!(
                "expected a snapshot name of letters, digits, '-', '_' or '.' such as vault-20261124T063700Z, got {name:?}"
            ),
        )
    })
}

/// The variable names a raw configuration struct reads (its field names, upper-cased), taken
/// from the struct's own `Deserialize` implementation so the list cannot drift from the code.
/// The step runner uses it to check that the Task sets no variable a binary would ignore.
#[must_use]
pub fn variables<T: DeserializeOwned>() -> Vec<String> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    names.iter().map(|n| n.to_uppercase()).collect()
}

/// Checks a variable list that [`variables`] cannot make itself: that of a raw configuration
/// assembled from `#[serde(flatten)]` parts (serde hides a flattened struct's field names), which
/// the step lists part by part. Reads `T` with each of `names` set and no other variable.
///
/// # Panics
/// If `T` cannot be read so, or a field of `T` stays unset (its `Debug` shows a `None`): a
/// variable the list misses, which the step runner would refuse in a Task. For unit tests.
pub fn assert_names_cover<T: DeserializeOwned + fmt::Debug>(names: Vec<String>) {
    let all: T = from_iter(names.into_iter().map(|n| (n, "x".to_owned())))
        .unwrap_or_else(|e| panic!("the listed variables leave a required one unset: {e}"));
    let shown = format!("{all:?}");
    assert!(
        !shown.contains("None"),
        "a field has no variable in the list: {shown}"
    );
}

/// A deserializer that records the field names a struct asks for, then stops.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Raw {
        vault_addr: String,
        vault_token: Option<String>,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn missing_required_variable_is_named_in_upper_case() {
        let err = from_iter::<Raw, _>(vars(&[("VAULT_TOKEN", "s.x")])).unwrap_err();
        assert_eq!(err.to_string(), "VAULT_ADDR: is required but not set");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let raw: Raw =
            from_iter(vars(&[("VAULT_ADDR", "http://a"), ("VAULT_TOKEN", " ")])).unwrap();
        assert_eq!(raw.vault_addr, "http://a");
        assert!(raw.vault_token.is_none());
        let err = from_iter::<Raw, _>(vars(&[("VAULT_ADDR", "")])).unwrap_err();
        assert_eq!(err.variable, "VAULT_ADDR");
    }

    #[test]
    fn variables_come_from_the_struct() {
        assert_eq!(variables::<Raw>(), vec!["VAULT_ADDR", "VAULT_TOKEN"]);
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("s.supersecret");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "s.supersecret");
    }

    #[rstest]
    #[case(None, true, Ok(true))]
    #[case(Some("TRUE"), false, Ok(true))]
    #[case(Some("0"), true, Ok(false))]
    #[case(Some("off"), true, Ok(false))]
    #[case(Some("maybe"), true, Err(()))]
    fn booleans(
        #[case] value: Option<&str>,
        #[case] default: bool,
        #[case] want: Result<bool, ()>,
    ) {
        assert_eq!(parse_bool("X", value, default).map_err(|_| ()), want);
    }

    #[rstest]
    #[case(Some("90"), Ok(90))]
    #[case(Some("5m"), Ok(300))]
    #[case(Some("1h 30m"), Ok(5400))]
    #[case(None, Ok(7))]
    #[case(Some("0"), Err(()))]
    #[case(Some("soon"), Err(()))]
    fn durations(#[case] value: Option<&str>, #[case] want: Result<u64, ()>) {
        let got = parse_duration("T", value, Duration::from_secs(7)).map(|d| d.as_secs());
        assert_eq!(got.map_err(|_| ()), want);
    }

    #[test]
    fn duration_error_names_variable() {
        let err = parse_duration("SNAPSHOT_TIMEOUT", Some("soon"), Duration::ZERO).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SNAPSHOT_TIMEOUT: expected a positive duration"),
            "{err}"
        );
    }

    #[rstest]
    #[case(Some("3"), Ok(Some(3)))]
    #[case(Some("-1"), Err(()))]
    #[case(Some("11"), Err(()))]
    #[case(None, Ok(None))]
    fn counts(#[case] value: Option<&str>, #[case] want: Result<Option<u32>, ()>) {
        assert_eq!(parse_count("N", value, 0, 10).map_err(|_| ()), want);
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_its_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "from-file\n").unwrap();
        let f = p.to_str();
        let get = |v, f| secret_or_file("T", v, "T_FILE", f);
        assert_eq!(get(None, None), Ok(None));
        assert_eq!(get(Some(" direct "), None), Ok(Some(Secret::new("direct"))));
        assert_eq!(get(None, f), Ok(Some(Secret::new("from-file"))));
        assert_eq!(
            get(Some("x"), f).unwrap_err().to_string(),
            "T, T_FILE: both are set; set only one of them"
        );
    }

    #[test]
    fn secret_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s.abc\n").unwrap();
        assert_eq!(
            read_secret_file("VAULT_TOKEN_FILE", &p).unwrap().expose(),
            "s.abc"
        );
        std::fs::write(&p, "\n").unwrap();
        let err = read_secret_file("VAULT_TOKEN_FILE", &p).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = read_secret_file("VAULT_TOKEN_FILE", &dir.path().join("nope")).unwrap_err();
        assert!(
            err.to_string().starts_with("VAULT_TOKEN_FILE: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_list_that_misses_a_field_is_caught() {
        // Read through Debug only.
        #[allow(dead_code)]
        #[derive(Debug, Deserialize)]
        struct Part {
            vault_namespace: Option<String>,
        }
        #[allow(dead_code)]
        #[derive(Debug, Deserialize)]
        struct Whole {
            #[serde(flatten)]
            raw: Raw,
            #[serde(flatten)]
            part: Part,
        }
        assert!(variables::<Whole>().is_empty(), "flatten hides the names");
        let both = [variables::<Raw>(), variables::<Part>()].concat();
        assert_names_cover::<Whole>(both);
        let missing = std::panic::catch_unwind(|| assert_names_cover::<Whole>(variables::<Raw>()));
        assert!(missing.is_err());
    }

    #[rstest]
    #[case(None, Ok("vault"))]
    #[case(Some("prod-vault.eu"), Ok("prod-vault.eu"))]
    #[case(Some("a/b"), Err(()))]
    #[case(Some("-x"), Err(()))]
    fn prefixes(#[case] value: Option<&str>, #[case] want: Result<&str, ()>) {
        let got = name_prefix("SNAPSHOT_PREFIX", value, "vault");
        assert_eq!(got.as_deref().map_err(|_| ()), want);
    }

    #[rstest]
    #[case(" vault-20261124T063700Z\n", Ok("vault-20261124T063700Z"))]
    #[case("vault-20261124T063700Z.snap", Err("without its .snap suffix"))]
    #[case("vault-20261124T063700Z.snap.sha256", Err("without its .snap suffix"))]
    #[case(
        "../vault-20261124T063700Z",
        Err("expected a snapshot name of letters")
    )]
    #[case("", Err("expected a snapshot name of letters"))]
    fn snapshot_names(#[case] value: &str, #[case] want: Result<&str, &str>) {
        match (snapshot_name("SNAPSHOT_NAME", value), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(want)) => {
                assert_eq!(e.variable, "SNAPSHOT_NAME");
                assert!(e.message.contains(want), "{e}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }
}
