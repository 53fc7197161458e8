//! Enums with fixed names: what the command line parses, `--help` lists and files store.

/// Gives an enum `ALL` (its variants in order), `NAMES` (their names, in the same order),
/// `as_str`, `Display` and a `FromStr` whose error names what was asked for and lists the valid
/// names: `named_enum!(Mode, "labeling mode", Greedy => "greedy", Sampled => "sampled");`
macro_rules! named_enum {
    ($name:ident, $what:literal, $($variant:ident => $text:literal),+ $(,)?) => {
        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// The names `FromStr` accepts, in `ALL`'s order.
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<Self> {
                match $name::ALL.into_iter().find(|v| v.as_str() == s) {
                    Some(v) => Ok(v),
                    None => anyhow::bail!("unknown {} {s:?} (valid: {})", $what, $name::NAMES.join(", ")),
                }
            }
        }
    };
}
pub(crate) use named_enum;
