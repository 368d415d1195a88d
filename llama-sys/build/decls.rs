//! The declarations in Rust bindings, read as tokens: what the API probes ask about.
//!
//! Comments, doc attributes and literals are skipped and names are compared whole, so a name
//! that only occurs in a comment, a string, a parameter list or another struct does not count.
//! Uses only `std`, so a test can include it with `#[path]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A declaration a probe looks for.
#[derive(Clone, Copy, Debug)]
pub enum Api {
    /// `struct record` (or union) declares a field `field`.
    Field {
        /// The struct.
        record: &'static str,
        /// The field.
        field: &'static str,
    },
    /// An extern function of that name.
    Function(&'static str),
    /// A constant (C enumerators and `#define`d numbers become constants).
    Constant(&'static str),
    /// A type (struct, union, enum or alias; bindgen turns a C enum into an alias).
    Type(&'static str),
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Api::Field { record, field } => write!(f, "struct {record} has field {field}"),
            Api::Function(name) => write!(f, "function {name} exists"),
            Api::Constant(name) => write!(f, "constant {name} exists"),
            Api::Type(name) => write!(f, "type {name} exists"),
        }
    }
}

/// The declarations of a bindings file: what bindgen writes (items at the top level, functions
/// in `extern` blocks, fields in struct bodies). Functions of `impl` blocks (bitfield accessors)
/// and parameters of function-pointer types are not declarations of the C API and are left out.
#[derive(Debug, Default)]
pub struct Decls {
    functions: BTreeSet<String>,
    constants: BTreeSet<String>,
    types: BTreeSet<String>,
    fields: BTreeMap<String, BTreeSet<String>>,
}

/// What a `{`, `(` or `[` opened.
enum Scope {
    /// `extern "C" { ... }`: function declarations.
    Extern,
    /// The body of `struct NAME { ... }` or `union NAME { ... }`.
    Record(String),
    /// Anything else: an `impl` or function body, parentheses, brackets.
    Other,
}

impl Decls {
    /// Reads the declarations of Rust source text (bindgen output).
    pub fn parse(text: &str) -> Decls {
        let toks = tokens(text);
        let mut d = Decls::default();
        let mut stack: Vec<Scope> = Vec::new();
        let mut record: Option<String> = None;
        let ident = |i: usize| match toks.get(i) {
            Some(Tok::Ident(s)) => Some(*s),
            _ => None,
        };
        for (i, tok) in toks.iter().enumerate() {
            let top = stack.is_empty();
            match *tok {
                Tok::Ident("fn") if top || matches!(stack.last(), Some(Scope::Extern)) => {
                    if let Some(name) = ident(i + 1) {
                        d.functions.insert(name.into());
                    }
                }
                Tok::Ident("const") if top => {
                    if let (Some(name), Some(Tok::Punct(b':'))) = (ident(i + 1), toks.get(i + 2)) {
                        d.constants.insert(name.into());
                    }
                }
                Tok::Ident(kw @ ("type" | "enum" | "struct" | "union")) if top => {
                    if let Some(name) = ident(i + 1) {
                        d.types.insert(name.into());
                        if kw == "struct" || kw == "union" {
                            record = Some(name.into());
                        }
                    }
                }
                Tok::Ident(name) => {
                    if let (Some(Scope::Record(r)), Some(Tok::Punct(b':'))) = (stack.last(), toks.get(i + 1)) {
                        d.fields.entry(r.clone()).or_default().insert(name.into());
                    }
                }
                Tok::Punct(b'{') => {
                    let scope = match record.take() {
                        Some(name) if top => Scope::Record(name),
                        _ if i > 0 && ident(i - 1) == Some("extern") => Scope::Extern,
                        _ => Scope::Other,
                    };
                    stack.push(scope);
                }
                Tok::Punct(b'(' | b'[') => {
                    if top && toks.get(i.wrapping_sub(1)).is_some_and(|t| matches!(t, Tok::Ident(_))) {
                        record = None; // a tuple struct: no named fields
                    }
                    stack.push(Scope::Other);
                }
                Tok::Punct(b'}' | b')' | b']') => {
                    stack.pop();
                }
                Tok::Punct(b';') if top => record = None,
                _ => {}
            }
        }
        d
    }

    /// Whether `api` is declared.
    pub fn has(&self, api: Api) -> bool {
        match api {
            Api::Field { record, field } => self.fields.get(record).is_some_and(|f| f.contains(field)),
            Api::Function(name) => self.functions.contains(name),
            Api::Constant(name) => self.constants.contains(name),
            Api::Type(name) => self.types.contains(name),
        }
    }
}

/// A Rust token, as far as declarations need: identifiers (raw ones without `r#`), `::`, and
/// single ASCII punctuation. Literals, comments and lifetimes produce none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    PathSep,
    Punct(u8),
}

/// Splits Rust source into [`Tok`]s, skipping comments (nested block comments too), string,
/// byte-string, raw-string and character literals, numbers and lifetimes.
fn tokens(text: &str) -> Vec<Tok<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'/' if next == Some(b'/') => i = text[i..].find('\n').map_or(b.len(), |n| i + n),
            b'/' if next == Some(b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => i = skip_string(b, i + 1),
            b'b' if next == Some(b'"') => i = skip_string(b, i + 2),
            b'r' | b'b' if raw_string_start(b, i).is_some() => {
                let (hashes, body) = raw_string_start(b, i).unwrap_or_default();
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                i = b[body..].windows(close.len()).position(|w| w == close).map_or(b.len(), |n| body + n + close.len());
            }
            b'b' if next == Some(b'\'') => i = skip_char(text, i + 1),
            b'\'' => i = skip_char(text, i),
            b'r' if next == Some(b'#') && b.get(i + 2).is_some_and(|&c| is_ident(c)) => {
                let start = i + 2;
                i = start;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(&text[start..i]));
            }
            _ if c.is_ascii_digit() => {
                while i < b.len() && (is_ident(b[i]) || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
                {
                    i += 1;
                }
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(&text[start..i]));
            }
            b':' if next == Some(b':') => {
                out.push(Tok::PathSep);
                i += 2;
            }
            _ if c.is_ascii() => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            _ => i += 1, // a byte of a non-ASCII character outside literals and comments
        }
    }
    out
}

/// The index after the `"` that closes a string whose body starts at `i`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// For `r"`, `r#"`, `br"`, `br##"` ... at `i`: the number of `#` and where the body starts.
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i + usize::from(b[i] == b'b');
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    (b.get(j + hashes) == Some(&b'"')).then_some((hashes, j + hashes + 1))
}

/// Past a character literal at `i` (`'x'`, `'\n'`, `'\u{..}'`), or past the `'` of a lifetime.
fn skip_char(text: &str, i: usize) -> usize {
    let b = text.as_bytes();
    if b.get(i + 1) == Some(&b'\\') {
        // `'\n'`, `'\''`, `'\u{1f}'`: the escaped character is never the closing quote.
        return text.get(i + 3..).and_then(|t| t.find('\'')).map_or(b.len(), |n| i + 3 + n + 1);
    }
    match text[i + 1..].chars().next() {
        Some(ch) if b.get(i + 1 + ch.len_utf8()) == Some(&b'\'') => i + 1 + ch.len_utf8() + 1,
        _ => i + 1, // a lifetime: its name is read as an identifier next
    }
}
