//! Grammars for constrained sampling: GBNF text (llama.cpp's `grammars/README.md`) or a JSON
//! Schema converted to GBNF ([`json_schema_to_gbnf`](super::json_schema_to_gbnf)), optionally
//! lazy (applied only once a trigger word, pattern or token has been generated).
//!
//! llama.cpp's own grammar code reports a bad grammar by printing to stderr and returning
//! NULL, loops without bound on some repetitions (`x{3,1}`), recurses without bound on deeply
//! nested groups and long chains of rules (a stack overflow), and throws C++ exceptions or
//! aborts on some grammars during generation. [`check_gbnf`] therefore reads a grammar first,
//! in Rust, exactly as llama.cpp's parser reads it (the same syntax, the same repetition
//! limits, undefined rules, a missing `root`, left recursion), names the problem and its line
//! and column, and bounds the nesting before llama.cpp sees the text.

use crate::error::{Error, Result};
use crate::model::Token;

/// The deepest nesting of parenthesized groups accepted. llama.cpp's parser recurses once per
/// group level on the caller's stack, and so does [`check_gbnf`] (a few KiB per level in a
/// debug build): 64 levels fit a 2 MiB thread stack with room to spare. Grammars written by
/// hand or converted from JSON Schemas nest far less.
pub const MAX_GROUP_NESTING: usize = 64;

/// The longest chain of rules whose first element is another rule (`a ::= b ...`, `b ::= c
/// ...`) accepted: llama.cpp's left-recursion check recurses once per link.
pub const MAX_RULE_CHAIN: usize = 2048;

/// llama.cpp's `MAX_REPETITION_THRESHOLD` (`src/llama-grammar.cpp`): the largest repetition
/// count, and the bound on nested repetitions multiplied together.
pub const MAX_REPETITIONS: u64 = 2000;

/// The most text (bytes of generated pieces) a lazy grammar with trigger *patterns* may wait
/// for its trigger: llama.cpp matches the patterns with `std::regex` against all the text
/// generated so far, after every token, and the C++ standard library's matcher recurses per
/// character (a stack overflow on long texts). Trigger words and tokens have no such limit.
pub const MAX_PATTERN_TRIGGER_TEXT: usize = 2048;

/// What constrains the output: GBNF text or a JSON Schema. The start rule is `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Grammar {
    /// A GBNF grammar (`--grammar`, `--grammar-file`).
    Gbnf(String),
    /// A JSON Schema, as JSON text (`-j`, `--json-schema`, `-jf`), converted to GBNF as
    /// llama.cpp's `json_schema_to_grammar` converts it.
    JsonSchema(String),
}

impl Grammar {
    /// The GBNF text: the grammar itself, or the schema converted (an error naming the
    /// keyword and its path when the conversion cannot express the schema).
    pub fn to_gbnf(&self) -> Result<String> {
        match self {
            Grammar::Gbnf(text) => Ok(text.clone()),
            Grammar::JsonSchema(schema) => super::json_schema::json_schema_to_gbnf(schema),
        }
    }
}

/// What starts a lazy grammar (llama.cpp's `common_grammar_trigger`): before it, the grammar
/// constrains nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum GrammarTrigger {
    /// A word anywhere in the generated text; the grammar then constrains the text from that
    /// word on (the word included).
    Word(String),
    /// An ECMAScript regular expression (`std::regex`) found anywhere in the generated text;
    /// the grammar constrains the text from its first non-empty capture group (or the match).
    Pattern(String),
    /// A pattern that must match the whole generated text (anchored with `^` and `$`).
    PatternFull(String),
    /// A token; the grammar constrains the text from that token on (included).
    Token(Token),
}

/// A GBNF text that passed [`check_gbnf`]: llama.cpp's parser accepts it, its nesting is
/// bounded, and what is left to check against a model is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedGbnf {
    text: String,
    token_ids: Vec<u32>,
    token_names: Vec<String>,
    has_tokens: bool,
}

impl CheckedGbnf {
    /// The grammar text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The token ids the grammar names (`<[123]>`), to be checked against a vocabulary.
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    /// The token texts the grammar names (`<|im_start|>`), each of which must be exactly one
    /// token of the model's vocabulary.
    pub fn token_names(&self) -> &[String] {
        &self.token_names
    }

    /// Whether the grammar has token elements at all (`<...>`, `!<...>`).
    pub fn has_tokens(&self) -> bool {
        self.has_tokens
    }
}

/// Whether the ranges (inclusive; an upper bound below its lower one matches nothing) cover
/// every Unicode scalar value, U+0000 to U+10FFFF (surrogates need not be listed).
fn covers_every_character(ranges: &mut [(u32, u32)]) -> bool {
    ranges.sort_unstable();
    let mut next = 0u32; // the first code point not yet covered
    for &(lo, hi) in ranges.iter().filter(|(lo, hi)| lo <= hi) {
        if lo > next && !(next >= 0xD800 && lo <= 0xE000) {
            return false;
        }
        next = next.max(hi.saturating_add(1));
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
    }
    next > 0x10_FFFF
}

/// Reads `text` as llama.cpp's GBNF parser reads it and checks what llama.cpp checks (and
/// what it would crash on): the syntax, repetition counts (at most [`MAX_REPETITIONS`], the
/// maximum not below the minimum), every referenced rule defined, a `root` rule, no left
/// recursion, group nesting up to [`MAX_GROUP_NESTING`] and rule chains up to
/// [`MAX_RULE_CHAIN`]. The error names the problem and, for syntax, its line and column.
///
/// ```
/// use llama_runner::sampling::check_gbnf;
///
/// assert!(check_gbnf("root ::= \"yes\" | \"no\"").is_ok());
/// let e = check_gbnf("root ::= \"yes\" | maybe").unwrap_err();
/// assert!(e.to_string().contains("maybe"), "{e}");
/// let e = check_gbnf("root ::= root \"a\"").unwrap_err();
/// assert!(e.to_string().contains("left recursion"), "{e}");
/// ```
pub fn check_gbnf(text: &str) -> Result<CheckedGbnf> {
    if text.contains('\0') {
        let at = text.find('\0').map(|i| position(text, i));
        return Err(grammar_error(at, "the grammar contains a NUL byte"));
    }
    let mut p = Parser::new(text);
    p.parse()?;
    if p.rules.iter().all(Option::is_none) {
        return Err(grammar_error(None, "the grammar defines no rules"));
    }
    // Every referenced rule must be defined (llama.cpp: "Undefined rule").
    for rule in p.rules.iter().flatten() {
        for e in rule {
            if let Elem::RuleRef(id) = *e
                && p.rules.get(id as usize).is_none_or(Option::is_none)
            {
                let name = p.symbol_name(id);
                return Err(grammar_error(None, format!("rule `{name}` is used but never defined")));
            }
        }
    }
    let Some(&root) = p.symbol_ids.get("root") else {
        return Err(grammar_error(None, "the grammar has no `root` rule (the start symbol)"));
    };
    if p.rules.get(root as usize).is_none_or(Option::is_none) {
        return Err(grammar_error(None, "rule `root` is used but never defined"));
    }
    let rules: Vec<&[Elem]> = p.rules.iter().map(|r| r.as_deref().unwrap_or(&[])).collect();
    left_recursion(&rules, &p)?;
    Ok(CheckedGbnf {
        text: text.to_string(),
        token_ids: p.token_ids,
        token_names: p.token_names,
        has_tokens: p.has_tokens,
    })
}

fn grammar_error(at: Option<(usize, usize)>, problem: impl Into<String>) -> Error {
    Error::Grammar { at, problem: problem.into() }
}

/// Line and column (1-based, columns in characters) of byte offset `i`.
fn position(text: &str, i: usize) -> (usize, usize) {
    let before = &text[..i.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// One element of a rule, as llama.cpp stores it (`llama_grammar_element`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    End,
    Alt,
    RuleRef(u32),
    Char,
    CharNot,
    CharRngUpper,
    CharAlt,
    CharAny,
    Token,
}

struct Parser<'a> {
    text: &'a str,
    src: &'a [u8],
    /// Symbol name -> id, ids in order of first appearance (llama.cpp's `symbol_ids`).
    symbol_ids: std::collections::HashMap<String, u32>,
    rules: Vec<Option<Vec<Elem>>>,
    token_ids: Vec<u32>,
    token_names: Vec<String>,
    has_tokens: bool,
    depth: usize,
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            src: text.as_bytes(),
            symbol_ids: Default::default(),
            rules: Vec::new(),
            token_ids: Vec::new(),
            token_names: Vec::new(),
            has_tokens: false,
            depth: 0,
        }
    }

    /// The byte at `i`, 0 past the end (llama.cpp reads a NUL-terminated string).
    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn err(&self, i: usize, problem: impl Into<String>) -> Error {
        grammar_error(Some(position(self.text, i)), problem)
    }

    /// What is at `i`, for messages.
    fn near(&self, i: usize) -> String {
        let rest = self.text.get(i..).unwrap_or("");
        if rest.is_empty() {
            return "the end".to_string();
        }
        let snippet: String = rest.chars().take(12).collect();
        format!("`{}`", snippet.escape_debug())
    }

    fn symbol_id(&mut self, name: &str) -> u32 {
        let next = self.symbol_ids.len() as u32;
        *self.symbol_ids.entry(name.to_string()).or_insert(next)
    }

    fn generate_symbol_id(&mut self, base: &str) -> u32 {
        let next = self.symbol_ids.len() as u32;
        self.symbol_ids.insert(format!("{base}_{next}"), next);
        next
    }

    fn symbol_name(&self, id: u32) -> String {
        self.symbol_ids.iter().find(|(_, v)| **v == id).map_or_else(|| format!("#{id}"), |(k, _)| k.clone())
    }

    fn add_rule(&mut self, id: u32, rule: Vec<Elem>) {
        let id = id as usize;
        if self.rules.len() <= id {
            self.rules.resize(id + 1, None);
        }
        self.rules[id] = Some(rule);
    }

    fn parse_space(&self, mut i: usize, newline_ok: bool) -> usize {
        loop {
            match self.at(i) {
                b' ' | b'\t' => i += 1,
                b'\r' | b'\n' if newline_ok => i += 1,
                b'#' => {
                    while !matches!(self.at(i), 0 | b'\r' | b'\n') {
                        i += 1;
                    }
                }
                _ => return i,
            }
        }
    }

    fn parse_name(&self, i: usize) -> Result<usize> {
        let mut end = i;
        while is_word_char(self.at(end)) {
            end += 1;
        }
        if end == i {
            return Err(self.err(i, format!("expecting a rule name at {}", self.near(i))));
        }
        Ok(end)
    }

    fn parse_int(&self, i: usize) -> Result<usize> {
        let mut end = i;
        while self.at(end).is_ascii_digit() {
            end += 1;
        }
        if end == i {
            return Err(self.err(i, format!("expecting an integer at {}", self.near(i))));
        }
        Ok(end)
    }

    fn parse_hex(&self, i: usize, size: usize) -> Result<(u32, usize)> {
        let mut end = i;
        let mut value: u32 = 0;
        while end < i + size {
            let c = self.at(end);
            let Some(d) = (c as char).to_digit(16).filter(|_| c != 0) else { break };
            value = (value << 4) + d;
            end += 1;
        }
        if end != i + size {
            return Err(self.err(i, format!("expecting {size} hexadecimal digits at {}", self.near(i))));
        }
        Ok((value, end))
    }

    /// An escaped code point that must be a Unicode scalar value: llama.cpp takes any 32-bit
    /// value and then matches the bytes of no valid text (a surrogate, or past U+10FFFF, is
    /// what an invalid UTF-8 sequence from the model decodes to), so generation would emit
    /// invalid UTF-8 under a grammar that looks like it names a character.
    fn scalar(&self, i: usize, (value, end): (u32, usize)) -> Result<(u32, usize)> {
        if value > 0x10_FFFF || (0xD800..=0xDFFF).contains(&value) {
            let what = if value > 0x10_FFFF { "past U+10FFFF" } else { "a UTF-16 surrogate" };
            return Err(
                self.err(i, format!("{} is not a Unicode character ({what}) at {}", &self.text[i..end], self.near(i)))
            );
        }
        Ok((value, end))
    }

    /// One (possibly escaped) character of a literal or a class.
    fn parse_char(&self, i: usize) -> Result<(u32, usize)> {
        match self.at(i) {
            b'\\' => match self.at(i + 1) {
                b'x' => self.parse_hex(i + 2, 2),
                b'u' => self.scalar(i, self.parse_hex(i + 2, 4)?),
                b'U' => self.scalar(i, self.parse_hex(i + 2, 8)?),
                b't' => Ok(('\t' as u32, i + 2)),
                b'r' => Ok(('\r' as u32, i + 2)),
                b'n' => Ok(('\n' as u32, i + 2)),
                c @ (b'\\' | b'"' | b'[' | b']') => Ok((c as u32, i + 2)),
                _ => Err(self.err(i, format!("unknown escape at {}", self.near(i)))),
            },
            0 => Err(self.err(i, "unexpected end of input")),
            _ => {
                let c = self.text[i..].chars().next().unwrap_or('\0');
                Ok((c as u32, i + c.len_utf8()))
            }
        }
    }

    /// `<[123]>` or `<token text>` (after an optional `!`).
    fn parse_token(&mut self, i: usize) -> Result<usize> {
        if self.at(i) != b'<' {
            return Err(self.err(i, format!("expecting `<` at {}", self.near(i))));
        }
        let mut pos = i + 1;
        if self.at(pos) == b'[' {
            pos += 1;
            let end = self.parse_int(pos)?;
            let digits = &self.text[pos..end];
            // std::stoul (64-bit), then truncated to uint32_t by llama.cpp; ids are checked
            // against the vocabulary later, so refuse anything that is not a plain id.
            let id = digits
                .parse::<u64>()
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| self.err(pos, format!("token id {digits} is out of range")))?;
            pos = end;
            if self.at(pos) != b']' {
                return Err(self.err(pos, format!("expecting `]` at {}", self.near(pos))));
            }
            pos += 1;
            if self.at(pos) != b'>' {
                return Err(self.err(pos, format!("expecting `>` at {}", self.near(pos))));
            }
            self.token_ids.push(id);
            return Ok(pos + 1);
        }
        while !matches!(self.at(pos), 0 | b'>') {
            pos += 1;
        }
        if self.at(pos) != b'>' {
            return Err(self.err(pos, "expecting `>` (an unterminated token)"));
        }
        pos += 1;
        self.token_names.push(self.text[i..pos].to_string());
        Ok(pos)
    }

    fn parse_alternates(&mut self, i: usize, rule_name: &str, rule_id: u32, nested: bool) -> Result<usize> {
        let mut rule = Vec::new();
        let mut pos = self.parse_sequence(i, rule_name, &mut rule, nested)?;
        while self.at(pos) == b'|' {
            rule.push(Elem::Alt);
            pos = self.parse_space(pos + 1, true);
            pos = self.parse_sequence(pos, rule_name, &mut rule, nested)?;
        }
        rule.push(Elem::End);
        self.add_rule(rule_id, rule);
        Ok(pos)
    }

    fn parse_sequence(&mut self, i: usize, rule_name: &str, rule: &mut Vec<Elem>, nested: bool) -> Result<usize> {
        let mut last_sym_start = rule.len();
        let mut pos = i;
        let mut n_prev_rules: u64 = 1;
        loop {
            let c = self.at(pos);
            match c {
                b'"' => {
                    pos += 1;
                    last_sym_start = rule.len();
                    n_prev_rules = 1;
                    while self.at(pos) != b'"' {
                        if self.at(pos) == 0 {
                            return Err(self.err(pos, "unexpected end of input (an unterminated string literal)"));
                        }
                        let (_, next) = self.parse_char(pos)?;
                        pos = next;
                        rule.push(Elem::Char);
                    }
                    pos = self.parse_space(pos + 1, nested);
                }
                b'[' => {
                    let open = pos;
                    pos += 1;
                    let mut start = Elem::Char;
                    if self.at(pos) == b'^' {
                        pos += 1;
                        start = Elem::CharNot;
                    }
                    last_sym_start = rule.len();
                    n_prev_rules = 1;
                    let mut ranges: Vec<(u32, u32)> = Vec::new();
                    while self.at(pos) != b']' {
                        if self.at(pos) == 0 {
                            return Err(self.err(open, "unexpected end of input (an unterminated character class)"));
                        }
                        let (lo, next) = self.parse_char(pos)?;
                        pos = next;
                        rule.push(if last_sym_start < rule.len() { Elem::CharAlt } else { start });
                        let mut hi = lo;
                        if self.at(pos) == b'-' && self.at(pos + 1) != b']' {
                            if self.at(pos + 1) == 0 {
                                return Err(self.err(pos, "unexpected end of input (in a character range)"));
                            }
                            let (upper, next) = self.parse_char(pos + 1)?;
                            pos = next;
                            hi = upper;
                            rule.push(Elem::CharRngUpper);
                        }
                        ranges.push((lo, hi));
                    }
                    if start == Elem::CharNot && covers_every_character(&mut ranges) {
                        // What is left for it to match are code points no valid UTF-8 encodes.
                        return Err(
                            self.err(open, format!("{} excludes every character: it matches no text", self.near(open)))
                        );
                    }
                    if last_sym_start == rule.len() {
                        // llama.cpp stores an empty class as nothing at all: `[]` and `[^]`
                        // vanish from the rule (a quantifier after one is then refused).
                    }
                    pos = self.parse_space(pos + 1, nested);
                }
                b'<' | b'!' => {
                    if c == b'!' {
                        pos += 1;
                    }
                    let end = self.parse_token(pos)?;
                    self.has_tokens = true;
                    last_sym_start = rule.len();
                    n_prev_rules = 1;
                    rule.push(Elem::Token);
                    pos = self.parse_space(end, nested);
                }
                c if is_word_char(c) => {
                    let end = self.parse_name(pos)?;
                    let name = self.text[pos..end].to_string();
                    let id = self.symbol_id(&name);
                    pos = self.parse_space(end, nested);
                    last_sym_start = rule.len();
                    n_prev_rules = 1;
                    rule.push(Elem::RuleRef(id));
                }
                b'(' => {
                    let open = pos;
                    self.depth += 1;
                    if self.depth > MAX_GROUP_NESTING {
                        return Err(self.err(
                            open,
                            format!("groups are nested more than {MAX_GROUP_NESTING} deep (llama.cpp's parser recurses per level)"),
                        ));
                    }
                    pos = self.parse_space(pos + 1, true);
                    let n_before = self.symbol_ids.len() as u64;
                    let sub = self.generate_symbol_id(rule_name);
                    pos = self.parse_alternates(pos, rule_name, sub, true)?;
                    self.depth -= 1;
                    n_prev_rules = (self.symbol_ids.len() as u64 - n_before).max(1);
                    last_sym_start = rule.len();
                    rule.push(Elem::RuleRef(sub));
                    if self.at(pos) != b')' {
                        return Err(self.err(
                            pos,
                            format!(
                                "expecting `)` at {} (the group opened at {:?})",
                                self.near(pos),
                                position(self.text, open)
                            ),
                        ));
                    }
                    pos = self.parse_space(pos + 1, nested);
                }
                b'.' => {
                    last_sym_start = rule.len();
                    n_prev_rules = 1;
                    rule.push(Elem::CharAny);
                    pos = self.parse_space(pos + 1, nested);
                }
                b'*' | b'+' | b'?' => {
                    let op = pos;
                    pos = self.parse_space(pos + 1, nested);
                    let (min, max) = match c {
                        b'*' => (0, u64::MAX),
                        b'+' => (1, u64::MAX),
                        _ => (0, 1),
                    };
                    self.repeat(op, rule_name, rule, last_sym_start, &mut n_prev_rules, min, max)?;
                }
                b'{' => {
                    let op = pos;
                    pos = self.parse_space(pos + 1, nested);
                    if !self.at(pos).is_ascii_digit() {
                        return Err(self.err(pos, format!("expecting an integer at {}", self.near(pos))));
                    }
                    let end = self.parse_int(pos)?;
                    let min = self.count(pos, end)?;
                    pos = self.parse_space(end, nested);
                    let mut max = u64::MAX;
                    if self.at(pos) == b'}' {
                        max = min;
                        pos = self.parse_space(pos + 1, nested);
                    } else if self.at(pos) == b',' {
                        pos = self.parse_space(pos + 1, nested);
                        if self.at(pos).is_ascii_digit() {
                            let end = self.parse_int(pos)?;
                            max = self.count(pos, end)?;
                            pos = self.parse_space(end, nested);
                        }
                        if self.at(pos) != b'}' {
                            return Err(self.err(pos, format!("expecting `}}` at {}", self.near(pos))));
                        }
                        pos = self.parse_space(pos + 1, nested);
                    } else {
                        return Err(self.err(pos, format!("expecting `,` or `}}` at {}", self.near(pos))));
                    }
                    if min > MAX_REPETITIONS || (max != u64::MAX && max > MAX_REPETITIONS) {
                        return Err(
                            self.err(op, format!("a repetition count above {MAX_REPETITIONS} (llama.cpp's limit)"))
                        );
                    }
                    if max < min {
                        // llama.cpp computes max - min in unsigned arithmetic and loops
                        // (nearly) forever.
                        return Err(self.err(op, format!("the repetition's maximum {max} is below its minimum {min}")));
                    }
                    self.repeat(op, rule_name, rule, last_sym_start, &mut n_prev_rules, min, max)?;
                }
                _ => return Ok(pos),
            }
        }
    }

    fn count(&self, start: usize, end: usize) -> Result<u64> {
        // std::stoull; anything this large is above the repetition limit anyway.
        Ok(self.text[start..end].parse::<u64>().unwrap_or(u64::MAX - 1))
    }

    /// llama.cpp's `handle_repetitions`.
    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &mut self,
        op: usize,
        rule_name: &str,
        rule: &mut Vec<Elem>,
        last_sym_start: usize,
        n_prev_rules: &mut u64,
        min: u64,
        max: u64,
    ) -> Result<()> {
        let no_max = max == u64::MAX;
        if last_sym_start == rule.len() {
            return Err(self.err(op, "a `*`, `+`, `?` or `{` repetition with nothing before it to repeat"));
        }
        let prev: Vec<Elem> = rule[last_sym_start..].to_vec();
        let total = if !no_max && max > 0 {
            max
        } else if min > 0 {
            min
        } else {
            1
        };
        if n_prev_rules.saturating_mul(total) >= MAX_REPETITIONS {
            return Err(self.err(
                op,
                format!(
                    "nested repetitions expand to at least {MAX_REPETITIONS} rules (llama.cpp's limit): reduce \
                     the counts or the nesting"
                ),
            ));
        }
        if min == 0 {
            rule.truncate(last_sym_start);
        } else {
            for _ in 1..min {
                rule.extend_from_slice(&prev);
            }
        }
        let n_opt = if no_max { 1 } else { max - min };
        let mut last_rec = 0;
        for i in 0..n_opt {
            let mut rec = prev.clone();
            let id = self.generate_symbol_id(rule_name);
            if i > 0 || no_max {
                rec.push(Elem::RuleRef(if no_max { id } else { last_rec }));
            }
            rec.push(Elem::Alt);
            rec.push(Elem::End);
            self.add_rule(id, rec);
            last_rec = id;
        }
        if n_opt > 0 {
            rule.push(Elem::RuleRef(last_rec));
        }
        *n_prev_rules *= total;
        Ok(())
    }

    fn parse_rule(&mut self, i: usize) -> Result<usize> {
        let name_end = self.parse_name(i)?;
        let mut pos = self.parse_space(name_end, false);
        let name = self.text[i..name_end].to_string();
        let id = self.symbol_id(&name);
        if !(self.at(pos) == b':' && self.at(pos + 1) == b':' && self.at(pos + 2) == b'=') {
            return Err(self.err(pos, format!("expecting `::=` after rule name `{name}`, found {}", self.near(pos))));
        }
        pos = self.parse_space(pos + 3, true);
        pos = self.parse_alternates(pos, &name, id, false)?;
        match self.at(pos) {
            b'\r' => pos += if self.at(pos + 1) == b'\n' { 2 } else { 1 },
            b'\n' => pos += 1,
            0 => {}
            _ => return Err(self.err(pos, format!("expecting a newline or the end at {}", self.near(pos)))),
        }
        Ok(self.parse_space(pos, true))
    }

    fn parse(&mut self) -> Result<()> {
        let mut pos = self.parse_space(0, true);
        while self.at(pos) != 0 {
            pos = self.parse_rule(pos)?;
        }
        Ok(())
    }
}

fn is_end_of_sequence(e: Elem) -> bool {
    matches!(e, Elem::End | Elem::Alt)
}

/// llama.cpp's `llama_grammar_detect_left_recursion`, over every rule in index order, with the
/// recursion depth bounded.
fn left_recursion(rules: &[&[Elem]], p: &Parser<'_>) -> Result<()> {
    let n = rules.len();
    let mut visited = vec![false; n];
    let mut in_progress = vec![false; n];
    let mut may_be_empty = vec![false; n];
    for i in 0..n {
        if visited[i] {
            continue;
        }
        let mut st =
            LeftRec { rules, visited: &mut visited, in_progress: &mut in_progress, may_be_empty: &mut may_be_empty };
        match st.detect(i, 0) {
            Ok(false) => {}
            Ok(true) => {
                return Err(grammar_error(
                    None,
                    format!(
                        "left recursion (a rule that can reach itself before consuming any text) through rule `{}`; \
                         llama.cpp does not support it",
                        left_recursive_name(p, &in_progress)
                    ),
                ));
            }
            Err(()) => {
                return Err(grammar_error(
                    None,
                    format!(
                        "a chain of more than {MAX_RULE_CHAIN} rules each starting with the next (llama.cpp's check \
                         recurses per link)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn left_recursive_name(p: &Parser<'_>, in_progress: &[bool]) -> String {
    // The first rule still in progress whose name was written by the user (not `x_3`).
    let names: Vec<String> =
        (0..in_progress.len()).filter(|&i| in_progress[i]).map(|i| p.symbol_name(i as u32)).collect();
    names.iter().find(|n| !n.contains('_')).or(names.first()).cloned().unwrap_or_default()
}

struct LeftRec<'r, 'e> {
    rules: &'r [&'e [Elem]],
    visited: &'r mut [bool],
    in_progress: &'r mut [bool],
    may_be_empty: &'r mut [bool],
}

impl LeftRec<'_, '_> {
    fn detect(&mut self, idx: usize, depth: usize) -> std::result::Result<bool, ()> {
        if depth > MAX_RULE_CHAIN {
            return Err(());
        }
        if self.in_progress[idx] {
            return Ok(true);
        }
        self.in_progress[idx] = true;
        let rule = self.rules[idx];
        let mut at_rule_start = true;
        for &e in rule {
            if is_end_of_sequence(e) {
                if at_rule_start {
                    self.may_be_empty[idx] = true;
                    break;
                }
                at_rule_start = true;
            } else {
                at_rule_start = false;
            }
        }
        let mut recurse = true;
        for &e in rule {
            match e {
                Elem::RuleRef(r) if recurse => {
                    let r = r as usize;
                    if self.detect(r, depth + 1)? {
                        return Ok(true);
                    }
                    if !self.may_be_empty[r] {
                        recurse = false;
                    }
                }
                e if is_end_of_sequence(e) => recurse = true,
                _ => recurse = false,
            }
        }
        self.in_progress[idx] = false;
        self.visited[idx] = true;
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// The grammar sampler, kept beside the chain as llama.cpp's common sampler keeps it.

use std::ffi::{CString, c_char, c_int};
use std::ptr::NonNull;

use llama_sys as sys;

use crate::model::Model;

type AcceptFn = unsafe extern "C" fn(*mut sys::llama_sampler, sys::llama_token);

unsafe extern "C" {
    /// `shim/grammar.cpp`: calls `accept(smpl, token)` and catches any C++ exception.
    fn llama_runner_accept_catching(
        accept: AcceptFn,
        smpl: *mut sys::llama_sampler,
        token: sys::llama_token,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// llama.cpp's `regex_escape` (`common/common.cpp`): a backslash before `.^$|()*+?[]{}\`.
pub(crate) fn regex_escape(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 8);
    for c in word.chars() {
        if ".^$|()*+?[]{}\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The patterns `common_sampler_init` hands to llama.cpp for `triggers`, and the tokens.
fn trigger_lists(model: &Model, triggers: &[GrammarTrigger]) -> Result<(Vec<String>, Vec<Token>)> {
    let mut patterns = Vec::new();
    let mut tokens = Vec::new();
    let n_vocab = model.n_vocab();
    for t in triggers {
        let (shown, pattern) = match t {
            GrammarTrigger::Word(w) => (format!("word {w:?}"), regex_escape(w)),
            GrammarTrigger::Pattern(p) => (format!("pattern {p:?}"), p.clone()),
            GrammarTrigger::PatternFull(p) => {
                let anchored = if p.is_empty() {
                    "^$".to_string()
                } else {
                    format!(
                        "{}{p}{}",
                        if p.starts_with('^') { "" } else { "^" },
                        if p.ends_with('$') { "" } else { "$" }
                    )
                };
                (format!("full pattern {p:?}"), anchored)
            }
            GrammarTrigger::Token(tok) => {
                if *tok < 0 || *tok as u32 >= n_vocab {
                    return Err(Error::GrammarTrigger {
                        trigger: format!("token {tok}"),
                        problem: format!("not in the vocabulary ({n_vocab} tokens)"),
                    });
                }
                tokens.push(*tok);
                continue;
            }
        };
        // llama.cpp compiles each pattern with std::regex and does not catch the exception a
        // bad one throws: check it with the same engine first.
        crate::regex::check(&pattern).map_err(|problem| Error::GrammarTrigger { trigger: shown, problem })?;
        patterns.push(pattern);
    }
    Ok((patterns, tokens))
}

/// llama.cpp's grammar sampler for one model, with what this crate tracks to keep llama.cpp
/// from aborting: whether a lazy grammar still waits for its trigger (and over how much text),
/// and whether a failed accept has left it without stacks (any further use would abort).
pub(crate) struct GrammarSampler {
    raw: NonNull<sys::llama_sampler>,
    lazy: bool,
    patterns: Vec<String>,
    trigger_tokens: Vec<Token>,
    awaiting: bool,
    awaited_text: Vec<u8>,
    poisoned: bool,
    accepted: usize,
}

// SAFETY: a llama_sampler is a plain heap object without thread affinity (see `Sampler`); it is
// used only through `&mut self`.
unsafe impl Send for GrammarSampler {}

impl GrammarSampler {
    /// Checks `gbnf` ([`check_gbnf`]) and the triggers against `model`, then builds llama.cpp's
    /// grammar sampler with the start rule `root` (lazy when `lazy`). `None` for an empty text,
    /// which llama.cpp's common sampler treats as no grammar.
    pub(crate) fn new(model: &Model, gbnf: &str, lazy: bool, triggers: &[GrammarTrigger]) -> Result<Option<Self>> {
        if gbnf.is_empty() {
            return Ok(None);
        }
        let checked = check_gbnf(gbnf)?;
        let n_vocab = model.n_vocab();
        if let Some(id) = checked.token_ids().iter().find(|&&id| id >= n_vocab) {
            return Err(grammar_error(None, format!("token <[{id}]> is not in the vocabulary ({n_vocab} tokens)")));
        }
        for name in checked.token_names() {
            let n = model.tokenize(name, false)?.len();
            if n != 1 {
                return Err(grammar_error(
                    None,
                    format!("token {name} is not one token of the model's vocabulary (it tokenizes to {n})"),
                ));
            }
        }
        let (patterns, trigger_tokens) = if lazy { trigger_lists(model, triggers)? } else { (Vec::new(), Vec::new()) };
        let text = CString::new(gbnf).map_err(|_| grammar_error(None, "the grammar contains a NUL byte"))?;
        let root = c"root";
        let c_patterns =
            patterns.iter().map(|p| CString::new(p.as_str())).collect::<std::result::Result<Vec<_>, _>>().map_err(
                |_| Error::GrammarTrigger { trigger: "pattern".into(), problem: "contains a NUL byte".into() },
            )?;
        let mut ptrs: Vec<*const c_char> = c_patterns.iter().map(|p| p.as_ptr()).collect();
        let vocab = model.vocab();
        // SAFETY: the vocabulary is valid while the model lives (the Sampler borrows it); the
        // text, root and patterns are NUL-terminated and outlive the call (llama.cpp copies
        // them); the grammar was checked above so llama.cpp's parser neither loops nor
        // recurses without bound, and every pattern compiles with std::regex (no exception).
        let raw = unsafe {
            if lazy {
                sys::llama_sampler_init_grammar_lazy_patterns(
                    vocab,
                    text.as_ptr(),
                    root.as_ptr(),
                    ptrs.as_mut_ptr(),
                    ptrs.len(),
                    trigger_tokens.as_ptr(),
                    trigger_tokens.len(),
                )
            } else {
                sys::llama_sampler_init_grammar(vocab, text.as_ptr(), root.as_ptr())
            }
        };
        crate::logging::resume_panic();
        let raw = NonNull::new(raw)
            .ok_or_else(|| grammar_error(None, "llama.cpp refused the grammar against this model's vocabulary"))?;
        Ok(Some(GrammarSampler {
            raw,
            lazy,
            patterns,
            trigger_tokens,
            awaiting: lazy,
            awaited_text: Vec::new(),
            poisoned: false,
            accepted: 0,
        }))
    }

    pub(crate) fn dead_end(&self, detail: Option<String>) -> Error {
        Error::GrammarDeadEnd { accepted: self.accepted, detail }
    }

    /// Usable: not left without stacks by a failed accept.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(self.dead_end(Some("the grammar reached a dead end before; reset the sampler".into())));
        }
        Ok(())
    }

    /// Applies the grammar to `cur` (refused candidates get a `-inf` logit).
    ///
    /// # Safety
    /// `cur` describes `size` valid candidates of this model's vocabulary.
    pub(crate) unsafe fn apply(&mut self, cur: &mut sys::llama_token_data_array) {
        // SAFETY: valid sampler; the grammar has stacks (not poisoned, checked by the callers),
        // so llama.cpp's non-empty-stacks assert holds; candidates as the caller promises.
        unsafe { sys::llama_sampler_apply(self.raw.as_ptr(), cur) }
    }

    /// Whether the grammar allows `token` next (common_sampler_sample's single-token check).
    pub(crate) fn allows(&mut self, token: Token) -> bool {
        let mut one = sys::llama_token_data { id: token, logit: 1.0, p: 0.0 };
        let mut arr = sys::llama_token_data_array { data: &mut one, size: 1, selected: -1, sorted: false };
        // SAFETY: one candidate, a token the chain picked from the vocabulary.
        unsafe { self.apply(&mut arr) };
        one.logit != f32::NEG_INFINITY
    }

    /// Accepts a token the grammar allows ([`allows`](Self::allows) was true): an exception
    /// from llama.cpp is caught and makes this grammar unusable until reset.
    pub(crate) fn accept(&mut self, model: &Model, token: Token) -> Result<()> {
        self.check_usable()?;
        let tracking = self.lazy && self.awaiting && !self.patterns.is_empty();
        let mut piece = Vec::new();
        if tracking && !self.trigger_tokens.contains(&token) {
            piece = model.token_piece(token)?.into_bytes();
            if self.awaited_text.len() + piece.len() > MAX_PATTERN_TRIGGER_TEXT {
                return Err(Error::GrammarTriggerTextTooLong { limit: MAX_PATTERN_TRIGGER_TEXT });
            }
        }
        let mut err = [0u8; 512];
        // SAFETY: valid sampler and a token of its vocabulary; an end-of-generation token
        // reaches here only when the grammar allows it (then llama.cpp's accept returns instead
        // of aborting); the shim catches the exception a dead end throws; the awaited text is
        // bounded, so llama.cpp's std::regex matching stays shallow.
        let rc = unsafe {
            llama_runner_accept_catching(
                sys::llama_sampler_accept,
                self.raw.as_ptr(),
                token,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        crate::logging::resume_panic();
        if rc != 0 {
            self.poisoned = true;
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(self.dead_end(Some(String::from_utf8_lossy(&err[..end]).into_owned())));
        }
        self.accepted += 1;
        if self.lazy && self.awaiting {
            if self.trigger_tokens.contains(&token) {
                self.awaiting = false;
            } else if !self.patterns.is_empty() {
                self.awaited_text.extend_from_slice(&piece);
                let text = String::from_utf8_lossy(&self.awaited_text);
                if self.patterns.iter().any(|p| crate::regex::search(p, &text) == Some(true)) {
                    self.awaiting = false;
                }
            }
            if !self.awaiting {
                self.awaited_text.clear();
            }
        }
        Ok(())
    }

    /// Back to the start (llama.cpp rebuilds the grammar; a lazy one waits again).
    pub(crate) fn reset(&mut self) {
        // SAFETY: valid sampler; llama.cpp re-parses the text it parsed when built.
        unsafe { sys::llama_sampler_reset(self.raw.as_ptr()) };
        crate::logging::resume_panic();
        self.awaiting = self.lazy;
        self.awaited_text.clear();
        self.poisoned = false;
        self.accepted = 0;
    }
}

impl Drop for GrammarSampler {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_init_grammar*, freed once.
        unsafe { sys::llama_sampler_free(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        check_gbnf(text).unwrap_err().to_string()
    }

    #[test]
    fn characters_are_unicode_scalar_values() {
        // llama.cpp takes these and then generates invalid UTF-8 (found by an independent set).
        assert!(err(r#"root ::= "\U00110000""#).contains("past U+10FFFF"));
        assert!(err(r#"root ::= "\uD800""#).contains("surrogate"));
        assert!(err(r"root ::= [\U00000041-\UFFFFFFFF]").contains("not a Unicode character"));
        assert!(err(r"root ::= [^\x00-\U0010FFFF]").contains("excludes every character"));
        assert!(err(r"root ::= [^\x00-\uD7FF\uE000-\U0010FFFF]").contains("excludes every character"));
        assert!(err(r"root ::= [^\x00-\x7F\x80-\U0010FFFF]").contains("excludes every character"));
        for ok in [
            r"root ::= [^a]",
            r"root ::= [^\x00-\uD7FF]",
            r#"root ::= "\U0010FFFF\uE000""#,
            r"root ::= [\x41-\U0010FFFF]",
        ] {
            check_gbnf(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn accepts_llama_cpp_grammars() {
        for g in [
            "root ::= \"a\"",
            "root ::= [a-z]+ \"\\n\"\n",
            "root   ::= (expr \"=\" term \"\\n\")+\nexpr   ::= term ([-+*/] term)*\nterm   ::= [0-9]+",
            "# comment\nroot ::= x{2,5} y{3} z{1,}\nx ::= \"x\"\ny ::= \"y\"\nz ::= [^\\x00-\\x1F\"]",
            "root ::= <[12]> !<[13]> \"a\"",
            "root ::= (\n  \"a\" |\n  \"b\"\n)",
            "root ::= \"\\u00e9\\U0001F600\" . [\\]\\[]",
            "root ::= a\na ::= \"x\" | \n",
        ] {
            check_gbnf(g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
        }
    }

    #[test]
    fn names_the_problem() {
        assert!(err("root ::= \"a").contains("unterminated"));
        assert!(err("root ::= [a-").contains("end of input"));
        assert!(err("root := \"a\"").contains("::="));
        assert!(err("root ::= \"\\q\"").contains("unknown escape"));
        assert!(err("root ::= \"\\x4\"").contains("hexadecimal"));
        assert!(err("root ::= foo").contains("`foo`"));
        assert!(err("rot ::= \"a\"").contains("root"));
        assert!(err("root ::= a\na ::= a \"x\"").contains("left recursion"));
        assert!(err("root ::= \"a\"{3,1}").contains("below"));
        assert!(err("root ::= \"a\"{2001}").contains("2000"));
        assert!(check_gbnf("root ::= (\"a\"{50}){50}").is_ok(), "llama.cpp accepts it: {{50}} adds no rules");
        assert!(err("root ::= (\"a\"{0,50}){50}").contains("nested repetitions"));
        assert!(err("root ::= *").contains("nothing before"));
        assert!(err("root ::= (\"a\"").contains("`)`"));
        assert!(err("root ::= \"a\" )").contains("newline"));
        assert!(err("").contains("no rules"));
        assert!(err("root ::= <[99999999999]>").contains("out of range"));
        assert!(err("root ::= <abc").contains("unterminated token"));
        assert!(err("root ::= \"a\"\0").contains("NUL"));
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(300), ")".repeat(300));
        assert!(err(&deep).contains("nested"));
        let mut chain = String::from("root ::= r0\n");
        for i in 0..3000 {
            chain.push_str(&format!("r{i} ::= r{} \"x\"\n", i + 1));
        }
        chain.push_str("r3000 ::= \"y\"\n");
        assert!(err(&chain).contains("chain"));
        let e = err("root ::= \"a\"\nx ::= \"b\" ]");
        assert!(e.contains("line 2"), "{e}");
    }
}
