//! One declaration per option. Each command's settings are one struct that is both its flags
//! (clap) and its config-file section (serde, same names in snake_case); the flags given are laid
//! over the file's values with [`Merge`], and the library's options check the result, so a
//! library caller gets the same checks. (ripgrep's low-level → high-level args are the model.)

/// Lays a value from the command line over the config file's.
pub trait Merge {
    fn over(self, file: Self) -> Self;
}

/// A flag given wins.
impl<T> Merge for Option<T> {
    fn over(self, file: Self) -> Self {
        self.or(file)
    }
}

/// A repeatable flag given at all replaces the file's list.
impl<T> Merge for Vec<T> {
    fn over(self, file: Self) -> Self {
        if self.is_empty() { file } else { self }
    }
}

/// A switch is on when either turns it on.
impl Merge for bool {
    fn over(self, file: Self) -> Self {
        self || file
    }
}

/// Declares a settings struct (flags and config-file section at once) and its [`Merge`].
macro_rules! settings {
    (
        $(#[$sm:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }

        impl $crate::cli::settings::Merge for $name {
            fn over(self, file: Self) -> Self {
                Self {
                    $( $field: $crate::cli::settings::Merge::over(self.$field, file.$field), )*
                }
            }
        }
    };
}

pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::Merge;

    settings! {
        /// A test section.
        pub struct Section {
            #[arg(long)]
            pub out: Option<String>,
            #[arg(long = "topics")]
            pub topics: Vec<String>,
            #[arg(long)]
            pub append: bool,
        }
    }

    #[test]
    fn flags_given_win_and_the_file_fills_the_rest() {
        let file: Section =
            serde_json::from_str(r#"{"out": "f.kar", "topics": ["a", "b"], "append": true}"#)
                .unwrap();
        let flags = Section {
            out: None,
            topics: vec!["c".into()],
            append: false,
        };
        let m = flags.over(file.clone());
        assert_eq!(m.out.as_deref(), Some("f.kar"));
        assert_eq!(m.topics, ["c"]);
        assert!(m.append);
        let m = Section::default().over(file);
        assert_eq!(m.topics, ["a", "b"]);
        assert!(serde_json::from_str::<Section>(r#"{"outt": "x"}"#).is_err());
    }
}
